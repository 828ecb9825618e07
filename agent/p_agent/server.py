"""The agent's socket server: one JSON request per line, one reply each.

Requests come through the client's SSH-forwarded unix socket. A thread per
connection keeps blocking requests (``wait``, ``logs`` with follow) simple;
clients are few (one per running `p` command).
"""

from __future__ import annotations

import os
import socketserver
import sys
import threading
import time
from typing import Any, BinaryIO

from p_protocol import (
    PROTOCOL,
    VERSION,
    Layout,
    Op,
    ProtocolError,
    checked_job_id,
    decode,
    encode,
    error,
    ok,
)

from . import scripts
from .jobs import ASK_TMUX_EVERY, Jobs, poll_intervals
from .tmux import TmuxError

CHUNK = 64 * 1024
# With no client and no running job for this long, the agent exits; the
# next `p` command starts it again (one agent start per connection at most).
IDLE_SECONDS = 3600.0


class Streamed:
    """Marks a reply already written as a raw stream; the connection ends."""


STREAMED = Streamed()


class Agent:
    def __init__(self, layout: Layout, jobs: Jobs) -> None:
        self.layout = layout
        self.jobs = jobs
        self.connections = 0
        self.last_activity = time.monotonic()
        self.lock = threading.Lock()

    def dispatch(self, request: dict[str, Any], out: BinaryIO) -> dict[str, Any] | Streamed:
        try:
            op = Op(request.get("op"))
        except ValueError:
            raise ProtocolError(f"unknown request {request.get('op')!r}") from None
        jobs = self.jobs
        if op is Op.HELLO:
            return ok(version=VERSION, protocol=PROTOCOL, home=os.path.expanduser("~"),
                      shell=os.environ.get("SHELL", "/bin/sh"))
        if op is Op.PREPARE:
            job_id = checked_job_id(request.get("id"))
            return ok(reused=jobs.spares.take(_text(request, "spare"), jobs.layout.workdir(job_id)))
        if op is Op.START:
            job_id = checked_job_id(request.get("id"))
            job = jobs.start(
                job_id,
                _text(request, "command"),
                _text(request, "cwd"),
                _text(request, "worker"),
                int(request.get("cols") or 80),
                int(request.get("rows") or 24),
                tty=bool(request.get("tty", True)),
                expect_client=bool(request.get("attach")),
            )
            if request.get("spare"):
                jobs.spares.copy_from(_text(request, "spare"), jobs.layout.workdir(job_id), job_id)
            return ok(job=job)
        if op is Op.STATUS:
            ids = [checked_job_id(job_id) for job_id in request.get("ids") or []]
            return ok(jobs=jobs.views(ids))
        if op is Op.WAIT:
            return ok(job=jobs.wait(checked_job_id(request.get("id"))))
        if op is Op.LOGS:
            self._stream_log(checked_job_id(request.get("id")), int(request.get("offset") or 0),
                             bool(request.get("follow")), out)
            return STREAMED
        if op is Op.STOP:
            grace = float(request.get("grace", 10.0))
            return ok(job=jobs.stop(checked_job_id(request.get("id")), grace))
        if op is Op.INTERRUPT:
            jobs.interrupt(checked_job_id(request.get("id")))
            return ok()
        if op is Op.REMOVE:
            spare = _text(request, "spare") if request.get("spare") is not None else None
            jobs.remove(checked_job_id(request.get("id")), bool(request.get("force")), spare)
            return ok()
        if op is Op.CLEAN:
            return ok(**jobs.clean())
        if op is Op.RESOLVE:
            path, is_dir = jobs.resolve(checked_job_id(request.get("id")), _text(request, "path"))
            return ok(path=path, is_dir=is_dir)
        if op is Op.WORKDIRS:
            ids = [checked_job_id(job_id) for job_id in request.get("ids") or []]
            return ok(present=jobs.existing_workdirs(ids))
        raise ProtocolError(f"unhandled request {op.value}")  # pragma: no cover

    def _stream_log(self, job_id: str, offset: int, follow: bool, out: BinaryIO) -> None:
        path = self.jobs.log_path(job_id)
        try:
            log = open(path, "rb")
        except FileNotFoundError:
            raise ProtocolError("the job has no output log on this worker") from None
        with log:
            size = os.fstat(log.fileno()).st_size
            out.write(encode(ok(size=size)))
            try:
                self._copy_log(job_id, log, offset, follow, out)
            except (OSError, ProtocolError, TmuxError) as exc:
                # The reply is raw bytes by now: an error line would read as
                # job output. Closing the connection says "stream broken".
                print(f"logs of {job_id}: {exc}", file=sys.stderr)

    def _copy_log(self, job_id: str, log: BinaryIO, offset: int, follow: bool, out: BinaryIO) -> None:
        """Copy the job's output from ``offset``: never the end marker or the
        banner after it (see scripts.RUN_SH), even before `log_end` exists."""
        marker = scripts.end_marker(job_id)
        emitted = max(0, offset)
        held = b""  # read but not sent: may be the start of the marker
        log.seek(emitted)
        delays = poll_intervals()
        polls = 0
        while True:
            # Read the "finished" flag before the data, so bytes written
            # just before the job ended are never cut off.
            finished = not follow or self.jobs.has_ended(job_id, ask_tmux=polls % ASK_TMUX_EVERY == 0)
            polls += 1
            end = self.jobs.log_end(job_id)
            data = log.read(CHUNK)
            pending = held + data
            if end is not None:
                send, held = pending[: max(0, end - emitted)], b""
            else:
                cut = pending.find(marker)
                if cut >= 0:
                    send, held = pending[:cut], b""
                    end = emitted + cut
                else:
                    send, held = _split_marker_start(pending, marker)
            if send:
                out.write(send)
                out.flush()
                emitted += len(send)
            if end is not None and emitted >= end or (finished and not data):
                return
            if not data:
                time.sleep(next(delays))
            else:
                delays = poll_intervals()

    def touch(self, delta: int) -> None:
        with self.lock:
            self.connections += delta
            self.last_activity = time.monotonic()

    def idle(self) -> bool:
        with self.lock:
            quiet = self.connections == 0 and time.monotonic() - self.last_activity > IDLE_SECONDS
        return quiet and not self.jobs.tmux.sessions()


class Handler(socketserver.StreamRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        agent = self.server.agent
        agent.touch(+1)
        try:
            for line in self.rfile:
                try:
                    reply = agent.dispatch(decode(line), self.wfile)
                except (ProtocolError, TmuxError, OSError, ValueError, TypeError) as exc:
                    reply = error(str(exc))
                if isinstance(reply, Streamed):
                    return
                self.wfile.write(encode(reply))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            agent.touch(-1)


class AgentServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, agent: Agent) -> None:
        self.agent = agent
        super().__init__(path, Handler)


def _split_marker_start(data: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """(safe, maybe): ``maybe`` is the longest tail of ``data`` that could be
    the beginning of ``marker``."""
    for size in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-size:]):
            return data[:-size], data[-size:]
    return data, b""


def _text(request: dict[str, Any], field: str) -> str:
    value = request.get(field)
    if not isinstance(value, str):
        raise ProtocolError(f"{field!r} must be a string")
    return value
