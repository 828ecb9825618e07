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

from p_protocol import PROTOCOL, VERSION, WORKER_TOOLS, ProtocolError
from p_protocol.jobspec import JobSpec
from p_protocol.layout import Layout
from p_protocol.wire import SPECS, check_request, decode, encode, error, ok

from . import events
from .executor import EngineError
from .files import ASK_ENGINE_EVERY, poll_intervals
from .jobs import Jobs

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any, BinaryIO

CHUNK = 64 * 1024
# With no client and no running job for this long, the agent exits; the
# next `p` command starts it again (one agent start per connection at most).
IDLE_SECONDS = 3600.0
# How long a followed log, at its end marker, waits for the exit code.
END_AFTER_MARKER = 2.0


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

    def dispatch(self, message: dict[str, Any], out: BinaryIO) -> dict[str, Any] | Streamed:
        """One request, held to its declaration (p_protocol.wire.SPECS),
        to its handler: a method named after its op."""
        op, request = check_request(message)
        handler = getattr(self, f"on_{op.value}")
        if SPECS[op].streams:
            return handler(request, out)  # type: ignore[no-any-return]
        return handler(request)  # type: ignore[no-any-return]

    def on_hello(self, _: dict[str, Any]) -> dict[str, Any]:
        return ok(version=VERSION, protocol=PROTOCOL, home=os.path.expanduser("~"),
                  engine=self.jobs.executor.name)

    def on_prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        # A connection is served by a thread of its own, for its whole life.
        reused, origin = self.jobs.prepare(request["id"], request["spare"], threading.get_ident(),
                                           source=request["source"])
        return ok(reused=reused, origin=origin)

    def on_start(self, request: dict[str, Any]) -> dict[str, Any]:
        job_id = request["id"]
        # Before the job can change its workdir: what changed there from now
        # on was not synced (see Spares.copy_from).
        mark = self.jobs.spares.mark() if request["spare"] is not None else None
        job = self.jobs.start(job_id, JobSpec.parse(request["spec"]), request["cwd"], request["worker"],
                              request["cols"], request["rows"], tty=request["tty"],
                              expect_client=request["attach"], secrets=request["secrets"],
                              notify_command=request["notify_command"])
        if request["spare"] is not None:
            self.jobs.spares.copy_from(request["spare"], self.layout.workdir(job_id), job_id, mark)
        argv = self.jobs.attach_argv(job_id, bool(request["ctrl_c_detaches"])) if request["attach"] else None
        return ok(job=job, argv=argv)

    def on_status(self, request: dict[str, Any]) -> dict[str, Any]:
        return ok(jobs=self.jobs.views(request["ids"]))

    def on_wait(self, request: dict[str, Any]) -> dict[str, Any]:
        return ok(job=self.jobs.wait(request["id"], request["timeout"], start=request["start"] is True))

    def on_logs(self, request: dict[str, Any], out: BinaryIO) -> Streamed:
        self._stream_log(request["id"], request["offset"], request["follow"], out)
        return STREAMED

    def on_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        return ok(job=self.jobs.stop(request["id"], request["grace"]))

    def on_interrupt(self, request: dict[str, Any]) -> dict[str, Any]:
        self.jobs.interrupt(request["id"])
        return ok()

    def on_attach(self, request: dict[str, Any]) -> dict[str, Any]:
        return ok(argv=self.jobs.attach_argv(request["id"], bool(request["ctrl_c_detaches"])))

    def on_remove(self, request: dict[str, Any]) -> dict[str, Any]:
        self.jobs.remove(request["id"], request["force"], request["spare"])
        return ok()

    def on_clean(self, _: dict[str, Any]) -> dict[str, Any]:
        return ok(**self.jobs.clean())

    def on_resolve(self, request: dict[str, Any]) -> dict[str, Any]:
        path, is_dir = self.jobs.resolve(request["id"], request["path"])
        return ok(path=path, is_dir=is_dir)

    def on_workdirs(self, request: dict[str, Any]) -> dict[str, Any]:
        return ok(present=self.jobs.existing_workdirs(request["ids"]))

    def on_scratch(self, request: dict[str, Any]) -> dict[str, Any]:
        path, free = self.jobs.scratch(request["path"])
        return ok(path=path, free=free)

    def on_events(self, request: dict[str, Any], out: BinaryIO) -> Streamed:
        try:
            size = os.path.getsize(self.layout.events_log)
        except FileNotFoundError:
            size = 0
        out.write(encode(ok(size=size)))
        try:
            events.stream(self.layout, request["offset"], bool(request["follow"]), out)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left: how a follow ends
        except OSError as exc:
            print(f"events: {exc}", file=sys.stderr)  # the stream is raw by now (see _stream_log)
        return STREAMED

    def on_info(self, _: dict[str, Any]) -> dict[str, Any]:
        return ok(worker=self._info())

    def on_check(self, _: dict[str, Any]) -> dict[str, Any]:
        import shutil  # only here: the agent's start does without it

        scratch, free = self.jobs.scratch(None)
        return ok(machine=os.uname().machine, missing=[tool for tool in WORKER_TOOLS if shutil.which(tool) is None],
                  scratch=scratch, free=free)

    def on_configure(self, request: dict[str, Any]) -> dict[str, Any]:
        was = self.jobs.queue.settings.drained
        self.jobs.queue.configure(request["slots"], request["gpus"], request["drained"], request["approval"])
        if request["drained"] is not None and request["drained"] != was:
            events.append(self.layout, "drained" if request["drained"] else "resumed")
        return ok(worker=self._info())

    def on_approve(self, request: dict[str, Any]) -> dict[str, Any]:
        return ok(job=self.jobs.approve(request["id"], True))

    def on_reject(self, request: dict[str, Any]) -> dict[str, Any]:
        return ok(job=self.jobs.approve(request["id"], False))

    def _info(self) -> dict[str, Any]:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0  # no load average here (it is only a tie-breaker)
        return {**self.jobs.queue.summary(), "load": round(load, 2), "cpus": os.cpu_count() or 1}

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
            except (OSError, ProtocolError, EngineError) as exc:
                # The reply is raw bytes by now: an error line would read as
                # job output. Closing the connection says "stream broken".
                print(f"logs of {job_id}: {exc}", file=sys.stderr)

    def _copy_log(self, job_id: str, log: BinaryIO, offset: int, follow: bool, out: BinaryIO) -> None:
        """Copy the job's output from ``offset``: never the end marker or the
        banner after it (see scripts.RUN_SH), even before `log_end` exists."""
        marker = self.jobs.executor.end_marker(job_id)
        emitted = max(0, offset)
        held = b""  # read but not sent: may be the start of the marker
        log.seek(emitted)
        delays = poll_intervals()
        polls = 0
        while True:
            # Read the "finished" flag before the data, so bytes written
            # just before the job ended are never cut off.
            polls += 1  # the engine is asked now and then, not at once: a job just started is held
            finished = not follow or self.jobs.has_ended(job_id, ask_engine=polls % ASK_ENGINE_EVERY == 0)
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
            if end is not None and emitted >= end:
                if follow:
                    # The exit code follows the marker within moments: a
                    # follower that closes after it asks for the job's
                    # state at once, and must find it ended.
                    self.jobs.wait_finished(job_id, END_AFTER_MARKER)
                return
            if finished and not data:
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
        # Never while jobs wait: nobody else would start them.
        return quiet and not self.jobs.queue.busy() and not self.jobs.executor.alive()


class Handler(socketserver.StreamRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        agent = self.server.agent
        agent.touch(+1)
        try:
            for line in self.rfile:
                try:
                    reply = agent.dispatch(decode(line), self.wfile)
                except (ProtocolError, EngineError, OSError, ValueError, TypeError) as exc:
                    reply = error(str(exc))
                if isinstance(reply, Streamed):
                    return
                self.wfile.write(encode(reply))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            agent.jobs.abandon(threading.get_ident())
            agent.touch(-1)


class AgentServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # socketserver's default backlog is 5: past it the worker's sshd cannot
    # connect a forwarded channel ("open failed"), and a client taken for
    # gone goes the cold way. `p worker ls` over fifty names of one worker,
    # or fifty `p` started at once, connect that many at a time.
    request_queue_size = 512

    def __init__(self, path: str, agent: Agent) -> None:
        self.agent = agent
        self.left_idle = False  # shut down for want of work (not a SIGTERM)
        super().__init__(path, Handler)


def _split_marker_start(data: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """(safe, maybe): ``maybe`` is the longest tail of ``data`` that could be
    the beginning of ``marker``."""
    for size in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-size:]):
            return data[:-size], data[-size:]
    return data, b""

