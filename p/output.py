"""What `p` prints about jobs, in one place."""

from __future__ import annotations

import os
import sys

from p_protocol.states import State

from .store import JobRecord
from .table import duration, size

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import BinaryIO


def display_cwd(path: str) -> str:
    home = os.path.expanduser("~")
    if path == home or path.startswith(home.rstrip("/") + "/"):
        return "~" + path[len(home.rstrip("/")):]
    return path


def seconds(record: JobRecord, now: float) -> float | None:
    """How long the job ran, or has run so far; None when nobody knows."""
    if record.ended_at is not None:
        return record.ended_at - record.started_at
    if record.status == State.RUNNING.value:
        return now - record.started_at
    return None


def job_json(record: JobRecord, now: float) -> dict[str, object]:
    """A job as every `--json` output shows it (one shape for all verbs,
    documented in docs/json.md: fields may be added, never changed)."""
    return {**record.to_dict(), "short_id": record.short_id, "duration": seconds(record, now)}


def rusage_cells(record: JobRecord) -> tuple[str, str, str]:
    """User CPU, system CPU, peak memory, as `p ls --wide` and `p show`
    print them: `unknown` for what the worker did not measure, `-` while
    the job runs; never a made-up figure."""
    if not record.finished:
        return "-", "-", "-"
    measured = record.rusage or {}
    cpu = tuple(f"{value:.2f}s" if isinstance(value, (int, float)) else "unknown"
                for value in (measured.get("user"), measured.get("sys")))
    peak = measured.get("max_rss")
    return cpu[0], cpu[1], size(peak) if isinstance(peak, int) else "unknown"


def status_text(record: JobRecord) -> str:
    if record.status == State.DONE.value:
        return f"done [{record.exit_code}]"
    if record.status == State.STOPPED.value:
        return "stopped"
    if record.position is not None and record.status in (State.QUEUED.value, State.PENDING_APPROVAL.value):
        return f"{record.status} #{record.position}"
    if record.status in (State.QUEUED.value, State.LOST.value) and record.reason:
        return f"{record.status} ({record.reason})"
    if record.status == State.TIMEOUT.value:
        return "timed out"
    return record.status


def exit_status(record: JobRecord) -> int:
    """What `p` exits with for a finished job, as ssh does for a command."""
    if record.exit_code is not None:
        return record.exit_code
    return 255


def summary(record: JobRecord) -> str:
    took = duration((record.ended_at or record.started_at) - record.started_at)
    if record.status == State.LOST.value:
        why = record.reason or "the worker has no exit status for it"
        return f"p: job {record.short_id} on {record.worker} is lost: {why}"
    code = "" if record.exit_code is None else f" [exit {record.exit_code}]"
    status = "timed out" if record.status == State.TIMEOUT.value else record.status
    return f"p: job {record.short_id} {status}{code} after {took} on {record.worker}"


def about_worker(worker: str, message: str) -> str:
    """A worker's problem as one line that names the worker once."""
    return f"p: {message}" if f"worker {worker}" in message else f"p: worker {worker}: {message}"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class LogWriter:
    """Writes job output; off a terminal, the pty's CRLF becomes LF."""

    def __init__(self, out: BinaryIO, raw: bool) -> None:
        self.out = out
        self.raw = raw
        self.held_cr = False
        self.written = 0  # bytes of the log consumed, to resume a stream

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if not self.raw:
            if self.held_cr:
                data = b"\r" + data
                self.held_cr = False
            if data.endswith(b"\r"):
                data, self.held_cr = data[:-1], True
            data = data.replace(b"\r\n", b"\n")
        self.out.write(data)
        self.out.flush()

    def finish(self) -> None:
        if self.held_cr:
            self.out.write(b"\r")
            self.out.flush()
