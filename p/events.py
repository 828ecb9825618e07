"""The client's event log: one JSON line per transition of a job that this
client causes or learns (submitted, started, ended, stopped, lost, removed),
in ``<data dir>/events.jsonl`` (p/paths.py).

Append-only, and a crash never costs an earlier line: each line is one
write(2) on an O_APPEND descriptor, so lines of concurrent `p` processes
never interleave and a crash can cut only the line being written. The file
is read as untrusted like every file: a line that is not an event is
skipped and counted (the reader warns once), never fatal.

``Store.save`` and ``Store.delete`` (p/store.py) log the transitions they
persist, under the store's lock, so two `p` commands that both learn a
job's end log it once; `p` run logs `started` itself.
"""

from __future__ import annotations

import json
import os
import sys
import time

from p_protocol import ProtocolError
from p_protocol.wire import Field, check_fields

from . import paths

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .agent_client import AgentClient

F = Field
# A line of either log (this client's, or a worker's through Op.EVENTS):
# fields this version does not know are left out, so later versions may add.
# ``id`` is absent from an event of a worker itself (drained, resumed).
EVENT = (F("time", "time"), F("event", "text"), F("id", "id", optional=True, nullable=True),
         F("worker", "text", optional=True, nullable=True),
         F("status", "text", optional=True, nullable=True), F("exit_code", "int", optional=True, nullable=True),
         F("reason", "text", optional=True, nullable=True))
EVENT_NAMES = frozenset(field.name for field in EVENT)
# Where an event was written: by this client, or by the job's worker.
CLIENT, WORKER = "client", "worker"


class Event:
    """One transition of one job; a plain class for startup time."""

    __slots__ = ("time", "event", "id", "worker", "status", "exit_code", "reason", "source")

    def __init__(self, time: float, event: str, id: str | None = None, worker: str | None = None,
                 status: str | None = None,
                 exit_code: int | None = None, reason: str | None = None, source: str = CLIENT) -> None:
        self.time = time
        self.event = event
        self.id = id
        self.worker = worker
        self.status = status
        self.exit_code = exit_code
        self.reason = reason
        self.source = source

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def parse(cls, data: Any, source: str, worker: str | None = None) -> Event:
        """``data`` as a checked event, or ValueError saying what is wrong. A
        worker's line says ``t`` for the time and ``error`` for a reason
        (docs/protocol.md); ``worker`` names the worker it came from."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if source == WORKER:
            data = {"time": data.get("t"), "reason": data.get("error"), **data, "worker": worker}
        try:
            checked = check_fields(EVENT, {k: v for k, v in data.items() if k in EVENT_NAMES}, "")
        except ProtocolError as exc:
            raise ValueError(str(exc).lstrip(": ")) from None
        return cls(**checked, source=source)

    def text(self) -> str:
        """What happened, as `p events` prints it: `ended [exit 0]`."""
        what = self.event
        if self.exit_code is not None:
            what += f" [exit {self.exit_code}]"
        if self.reason:
            what += f" ({' '.join(self.reason.split())})"
        return what


def append(event: str, job_id: str, worker: str, status: str | None = None, exit_code: int | None = None,
           reason: str | None = None) -> None:
    """Log one transition. A log that cannot be written is said, never
    fatal: the job matters more than its log line."""
    line = json.dumps({"time": round(time.time(), 3), "event": event, "id": job_id, "worker": worker,
                       "status": status, "exit_code": exit_code, "reason": reason},
                      separators=(",", ":"), allow_nan=False)
    data = (line + "\n").encode()
    path = paths.events_file()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a line cut short by a crash ends there, not in this one
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        print(f"p: cannot append to the event log {path}: {exc.strerror}", file=sys.stderr)


class LogReader:
    """Reads an event log's whole lines, and on each later call the lines
    appended since (for --follow)."""

    def __init__(self, path: str, source: str = CLIENT) -> None:
        self.path = path
        self.source = source
        self.offset = 0
        self.line = 0

    def read_new(self) -> tuple[list[Event], list[int]]:
        """The events appended since the last call, and the numbers of the
        lines that hold none (damaged)."""
        try:
            with open(self.path, "rb") as src:
                src.seek(self.offset)
                data = src.read()
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            print(f"p: cannot read the event log {self.path}: {exc.strerror}", file=sys.stderr)
            return [], []
        whole = data[: data.rfind(b"\n") + 1]  # a line being written is read once it ends
        self.offset += len(whole)
        return parse_lines(whole.split(b"\n")[:-1], self.source, self)


def parse_lines(lines: list[bytes], source: str, counter: LogReader | None = None,
                worker: str | None = None) -> tuple[list[Event], list[int]]:
    """Events from raw lines (of ``worker``'s log, for a worker's); the
    1-based numbers of damaged ones. Empty lines are no events (a worker's
    stream sends them to see that its reader is still there)."""
    found: list[Event] = []
    damaged: list[int] = []
    for number, raw in enumerate(lines, 1 + (counter.line if counter else 0)):
        if not raw.strip():
            continue
        try:
            found.append(Event.parse(json.loads(raw, parse_constant=_no_constant), source, worker))
        except ValueError:  # not UTF-8, not JSON, not an event
            damaged.append(number)
    if counter is not None:
        counter.line += len(lines)
    return found, damaged


def worker_events(agent: AgentClient, worker: str) -> tuple[list[Event], int]:
    """A worker's whole event log, oldest first, and the offset after it
    (to follow from); its damaged lines are one warning."""
    data = b"".join(agent.stream_events(0, follow=False))  # whole lines only
    found, damaged = parse_lines(data.split(b"\n"), WORKER, worker=worker)
    warn_damaged(f"worker {worker}'s ~/.p/events.jsonl", damaged)
    return found, len(data)


def follow_worker(agent: AgentClient, worker: str, offset: int, seen: Callable[[Event], None]) -> None:
    """Each event appended to a worker's log from byte ``offset`` on, to
    ``seen``, as it comes (until the link ends)."""
    pending = b""
    for chunk in agent.stream_events(offset, follow=True):
        *lines, pending = (pending + chunk).split(b"\n")
        found, damaged = parse_lines(lines, WORKER, worker=worker)
        warn_damaged(f"worker {worker}'s ~/.p/events.jsonl", damaged)
        for event in found:
            seen(event)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def warn_damaged(where: str, numbers: list[int]) -> None:
    """One line for the damaged lines of one read of a log."""
    if numbers:
        shown = ", ".join(str(n) for n in numbers[:5]) + (" …" if len(numbers) > 5 else "")
        print(f"p: skipped {len(numbers)} damaged line(s) of {where} (line {shown})", file=sys.stderr)


def client_events(job_id: str | None = None) -> list[Event]:
    """This client's log, oldest first (one job's, with ``job_id``); its
    damaged lines are one warning."""
    reader = LogReader(paths.events_file())
    found, damaged = reader.read_new()
    warn_damaged(reader.path, damaged)
    return [event for event in found if job_id is None or event.id == job_id]
