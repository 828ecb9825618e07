"""Talking to a worker's agent through the forwarded unix socket."""

from __future__ import annotations

import socket

from p_protocol import PROTOCOL, VERSION, Op, ProtocolError, decode, encode

from .errors import LINK_LOST, PError

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

CONNECT_TIMEOUT = 15.0
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
        self.conn, self.reader = self._open()
        try:
            hello = self._exchange({"op": Op.HELLO.value}, timeout)
        except (PError, AgentGone):
            self.close()
            raise
        if hello.get("version") != VERSION or hello.get("protocol") != PROTOCOL:
            self.close()
            raise AgentGone(f"agent {hello.get('version')} answered, {VERSION} wanted")
        self.home: str = hello["home"]

    def _open(self) -> tuple[socket.socket, Any]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(self.timeout)
        try:
            conn.connect(self.path)
        except OSError as exc:
            conn.close()
            raise AgentGone(str(exc)) from None
        return conn, conn.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.conn.close()

    def _exchange(self, message: dict[str, Any], timeout: float | None = CONNECT_TIMEOUT) -> dict[str, Any]:
        self.conn.settimeout(timeout)
        try:
            self.conn.sendall(encode(message))
            line = self.reader.readline()
        except (TimeoutError, socket.timeout):
            raise PError(f"worker {self.worker}'s agent did not answer in time; "
                         "check the link and retry") from None
        except OSError as exc:
            raise AgentGone(str(exc)) from None
        if not line:
            raise AgentGone("the connection closed")
        try:
            reply = decode(line)
        except ProtocolError as exc:
            raise PError(f"worker {self.worker} sent a malformed reply: {exc}") from None
        if not reply.get("ok"):
            raise AgentRefused(f"worker {self.worker}: {reply.get('error', 'request refused')}")
        return reply

    def request(self, op: Op, *, blocking: bool = False, **fields: Any) -> dict[str, Any]:
        """One request and its reply; ``blocking`` ones may take forever."""
        try:
            return self._exchange({"op": op.value, **fields}, None if blocking else self.timeout * 4)
        except AgentGone:
            raise PError(f"lost the connection to worker {self.worker}; jobs keep running there, "
                         "`p ls` shows their state once it is back", exit_code=LINK_LOST) from None

    def stream_log(self, job_id: str, offset: int, follow: bool) -> Iterator[bytes]:
        """The job's output from ``offset``; with ``follow`` until it ends.

        A connection of its own (it ends with the stream), so no hello.
        """
        lost = PError(f"lost the connection to worker {self.worker}; the job keeps running there, "
                      "`p logs` shows its output once the worker is back", exit_code=LINK_LOST)
        try:
            conn, reader = self._open()
        except AgentGone:
            raise lost from None
        try:
            conn.settimeout(None if follow else self.timeout * 4)
            conn.sendall(encode({"op": Op.LOGS.value, "id": job_id, "offset": offset, "follow": follow}))
            header = reader.readline()
            if not header:
                raise lost
            reply = decode(header)
            if not reply.get("ok"):
                raise AgentRefused(f"worker {self.worker}: {reply.get('error')}")
            while True:
                data = reader.read1(CHUNK)
                if not data:
                    return
                yield data
        except (OSError, ProtocolError):
            raise lost from None
        finally:
            reader.close()
            conn.close()
