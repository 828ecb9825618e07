"""Talking to a worker's agent through the forwarded unix socket."""

from __future__ import annotations

# The C module under `socket`: socket.py builds its enums and helpers at
# import, ~2 ms of every command's start, for a unix socket that needs
# none of them (a buffered reader over recv_into is all makefile gives).
import _socket
import io
import time

from p_protocol import PROTOCOL, VERSION, ProtocolError
from p_protocol.states import State
from p_protocol.wire import EVENTS_HEARTBEAT, MAX_LINE, Op, check_reply, decode, encode, request

from .errors import LINK_LOST, PError

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from typing import Any

CONNECT_TIMEOUT = 15.0
# How long one `wait` request may wait on the worker before it answers.
WAIT_SLICE = 30.0
CHUNK = 64 * 1024


class AgentGone(Exception):
    """The socket connected, but no agent answered behind it."""


class AgentRefused(PError):
    """The agent answered the request with an error."""


class AgentClient:
    def __init__(self, path: str, worker: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.path = path
        self.worker = worker
        self.timeout = timeout
        # Set when an exchange did not finish (a deadline, Ctrl+C): what is
        # left on that connection may be an old reply, so the next request
        # opens another.
        self.broken = False
        hello = self._connect()
        self.home: str = hello["home"]
        self.engine: str = hello["engine"]

    def _connect(self) -> dict[str, Any]:
        """A connection of this client's own, and the agent's hello on it."""
        self.conn, self.reader = self._open()
        self.broken = False
        try:
            hello = self._exchange(Op.HELLO, {}, self.timeout, check=False)
            if hello.get("version") != VERSION or hello.get("protocol") != PROTOCOL:
                # Another build: its messages may have other shapes.
                raise AgentGone(f"agent {str(hello.get('version'))[:40]!r} answered, {VERSION} wanted")
            return self._checked(Op.HELLO, hello)
        except (PError, AgentGone):
            self.close()
            raise

    def _open(self) -> tuple[_socket.socket, io.BufferedReader]:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        conn.settimeout(self.timeout)
        try:
            conn.connect(self.path)
        except OSError as exc:
            conn.close()
            raise AgentGone(str(exc)) from None
        return conn, io.BufferedReader(_Received(conn))

    def close(self) -> None:
        self.reader.close()
        self.conn.close()

    def _exchange(self, op: Op, fields: dict[str, Any], timeout: float | None, *,
                  check: bool = True) -> dict[str, Any]:
        if self.broken:
            self.close()
            self._connect()
        self.conn.settimeout(timeout)
        line = b""
        try:
            self.conn.sendall(encode(request(op, **fields)))
            line = self.reader.readline(MAX_LINE + 1)
        except (TimeoutError, _socket.timeout):
            raise PError(f"worker {self.worker}'s agent did not answer in time; "
                         "check the link and retry", exit_code=LINK_LOST) from None
        except OSError as exc:
            raise AgentGone(str(exc)) from None
        finally:
            self.broken = not line.endswith(b"\n")
        if not line:
            raise AgentGone("the connection closed")
        try:
            reply = decode(line)
        except ProtocolError as exc:
            raise PError(f"worker {self.worker} sent a malformed reply: {exc}") from None
        if reply.get("ok") is not True:
            raise AgentRefused(f"worker {self.worker}: {_refusal(reply)}")
        return self._checked(op, reply) if check else reply

    def _checked(self, op: Op, reply: dict[str, Any]) -> dict[str, Any]:
        """The reply held to its declaration (p_protocol.wire.SPECS)."""
        try:
            return check_reply(op, reply)
        except ProtocolError as exc:
            raise PError(f"worker {self.worker} sent a malformed reply: {exc}") from None

    def request(self, op: Op, *, blocking: bool = False, deadline: float | None = None,
                **fields: Any) -> dict[str, Any]:
        """One request and its reply, within ``deadline`` seconds (by default
        a quick request's); ``blocking`` ones (a copy of unknown size) may
        take forever."""
        if deadline is None:
            deadline = None if blocking else self.timeout * 4
        try:
            reply = self._exchange(op, fields, deadline)
        except AgentGone:
            raise PError(f"lost the connection to worker {self.worker}; jobs keep running there, "
                         "`p ls` shows their state once it is back", exit_code=LINK_LOST) from None
        if not _about_what_was_asked(fields, reply):
            raise PError(f"worker {self.worker} answered about other jobs than it was asked about")
        return reply

    def wait(self, job_id: str) -> dict[str, Any] | None:
        """The job once it has ended (None: the worker has no trace of it).
        Asked in slices, each with a deadline: an agent that stops answering
        is told from a job that runs for days."""
        while True:
            view = self.request(Op.WAIT, id=job_id, timeout=WAIT_SLICE, deadline=WAIT_SLICE + self.timeout * 4)["job"]
            if view is None or State(view["state"]).finished:
                return view

    def wait_start(self, job_id: str) -> dict[str, Any] | None:
        """The job once it has left the worker's queue (started, or ended
        unrun), asked in slices as ``wait`` is."""
        while True:
            view = self.request(Op.WAIT, id=job_id, timeout=WAIT_SLICE, start=True,
                                deadline=WAIT_SLICE + self.timeout * 4)["job"]
            if view is None or view.get("position") is None:
                return view

    def stop(self, job_id: str, grace: float) -> dict[str, Any] | None:
        """SIGTERM, SIGKILL after ``grace``: the job as it ended."""
        return self.request(Op.STOP, id=job_id, grace=grace, deadline=grace + self.timeout * 4)["job"]

    def stream_log(self, job_id: str, offset: int, follow: bool) -> Generator[bytes, None, dict[str, Any] | None]:
        """The job's output from ``offset``; with ``follow`` until it ends.
        Returns the job as it was when the stream ended (None: unknown there).

        The agent ends a stream by closing it, and so does a link that
        broke: after each close the job's state is asked (which fails when
        the link is gone), and a followed job that still runs is streamed
        on from where it stopped (its end marker is out a moment before its
        exit code is)."""
        lost = PError(f"lost the connection to worker {self.worker}; the job keeps running there, "
                      "`p logs` shows its output once the worker is back", exit_code=LINK_LOST)
        while True:
            for data in self._stream(Op.LOGS, lost, None if follow else self.timeout * 4, id=job_id,
                                     offset=offset, follow=follow):
                offset += len(data)
                yield data
            view = self.request(Op.STATUS, ids=[job_id])["jobs"].get(job_id)
            if not follow or view is None or State(view["state"]).finished:
                return view
            time.sleep(0.05)

    def stream_events(self, offset: int, follow: bool) -> Iterator[bytes]:
        """The worker's event log from byte ``offset``: whole lines, raw (each
        is untrusted: the reader parses it); with ``follow``, never ending,
        with an empty line now and then while nothing happens."""
        lost = PError(f"lost the connection to worker {self.worker}", exit_code=LINK_LOST)
        # The agent's heartbeat keeps a followed stream talking: silence
        # for three of them is a link that went mute.
        quiet = 3 * EVENTS_HEARTBEAT if follow else self.timeout * 4
        return self._stream(Op.EVENTS, lost, quiet, offset=offset, follow=follow)

    def _stream(self, op: Op, lost: PError, quiet: float | None, /, **fields: Any) -> Iterator[bytes]:
        """A streaming request's raw bytes, on a connection of its own (it
        ends with the stream), so no hello; ``quiet``: how long it may go
        without a byte (None: as long as a job may print nothing)."""
        try:
            conn, reader = self._open()
        except AgentGone:
            raise lost from None
        try:
            # The reply comes at once from any agent; only the bytes after
            # it may take as long as the job does.
            conn.settimeout(self.timeout * 4)
            conn.sendall(encode(request(op, **fields)))
            header = reader.readline(MAX_LINE + 1)
            if not header:
                raise lost
            try:
                reply = decode(header)
            except ProtocolError as exc:
                raise PError(f"worker {self.worker} sent a malformed reply: {exc}") from None
            if reply.get("ok") is not True:
                raise AgentRefused(f"worker {self.worker}: {_refusal(reply)}")
            self._checked(op, reply)
            conn.settimeout(quiet)
            while True:
                data = reader.read1(CHUNK)
                if not data:
                    return
                yield data
        except (TimeoutError, _socket.timeout):
            raise PError(f"worker {self.worker}'s agent did not answer in time; "
                         "check the link and retry", exit_code=LINK_LOST) from None
        except OSError:
            raise lost from None
        finally:
            reader.close()
            conn.close()


class _Received(io.RawIOBase):
    """A connection's incoming bytes, as `socket.makefile("rb")` reads them."""

    def __init__(self, conn: _socket.socket) -> None:
        self.conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.conn.recv_into(buffer)


def _refusal(reply: dict[str, Any]) -> str:
    """The agent's reason, as one line of printable text."""
    text = reply.get("error")
    if not isinstance(text, str) or not text:
        return "request refused"
    return "".join(c if c.isprintable() else "?" for c in text[:400])


def _about_what_was_asked(fields: dict[str, Any], reply: dict[str, Any]) -> bool:
    """A reply speaks of the job (or jobs) the request named, and no other:
    a worker that mixes them up must not make p record one job's fate as
    another's."""
    job = reply.get("job")
    if isinstance(job, dict) and job["id"] != fields.get("id"):
        return False
    jobs = reply.get("jobs")
    if isinstance(jobs, dict):
        asked = fields.get("ids") or []
        if set(jobs) != set(asked) or any(view is not None and view["id"] != key for key, view in jobs.items()):
            return False
    return True
