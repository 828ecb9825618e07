"""The worker's event log, ``~/.p/events.jsonl``: one JSON line per transition.

Whoever sees a transition appends it: the agent (``submitted``, ``started``,
``stopped``, ``removed``, and the queue's and drain's), and the job's own
script (``ended`` with its exit status, ``timeout``), which may run while no
agent does (scripts.py writes those lines itself, numbers and hex only).
Each line is one ``write`` to a file opened with O_APPEND, shorter than
PIPE_BUF: writers on the same file never interleave, and a crash can at
worst leave a last line cut short, never touch an earlier one. Readers
skip a line that is not a whole JSON object.

A line: ``{"t": <unix time>, "event": <name>, "id": <job id>, ...}``; ``id``
is absent for an event of the worker itself (``drained``).

The log is kept to about ROTATE_AT: past it, the agent renames it to
``events.jsonl.1`` (dropping the one before) and writers start a new one
(they open it by name for each line). A follower moves on to the new file;
an offset past the end of the current one was taken in the old one.
"""

from __future__ import annotations

import json
import os
import sys
import time

from p_protocol.layout import Layout
from p_protocol.wire import EVENTS_HEARTBEAT

from .files import poll_intervals

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any, BinaryIO

# Longer lines could interleave with another writer's (POSIX promises
# atomic appends up to PIPE_BUF, which is 4096 on Linux, 512 at the least).
MAX_LINE = 4096
# While a follower waits for events, an empty line this often: a client that
# left is noticed (its socket refuses the write) and its thread ends.
HEARTBEAT_SECONDS = EVENTS_HEARTBEAT
CHUNK = 64 * 1024
# Some 60,000 events: weeks of heavy use.
ROTATE_AT = 8 << 20


def line(event: str, job_id: str | None = None, **fields: Any) -> bytes:
    """One event as the log holds it."""
    # To the millisecond, cut as the job's script cuts its own times (never
    # rounded up): so an event logged here before the script's next one
    # never carries a later time.
    record: dict[str, Any] = {"t": int(time.time() * 1000) / 1000, "event": event}
    if job_id is not None:
        record["id"] = job_id
    record.update(fields)
    text = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
    if len(text) > MAX_LINE:
        raise ValueError(f"event {event} is {len(text)} bytes, more than one atomic append holds")
    return text


def append(layout: Layout, event: str, job_id: str | None = None, **fields: Any) -> None:
    """Append one event. Never fails the operation it records: a log that
    cannot be written (a full disk) is said in the agent's own log."""
    text = line(event, job_id, **fields)
    try:
        fd = os.open(layout.events_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, text)
            if written < len(text):
                os.write(fd, b"\n")  # end the cut line, so the next one stands alone
            if os.fstat(fd).st_size > ROTATE_AT:
                _rotate(layout, fd)
        finally:
            os.close(fd)
    except OSError as exc:
        print(f"event {event} not logged: {exc}", file=sys.stderr)


def _rotate(layout: Layout, fd: int) -> None:
    """Set the full log aside, unless another writer just did."""
    if _is_current(layout, fd):
        try:
            os.replace(layout.events_log, layout.events_log + ".1")
        except FileNotFoundError:
            pass


def _is_current(layout: Layout, fd: int) -> bool:
    """Whether ``fd`` is still the file the log's name gives (no file by
    that name counts: the next writer makes it)."""
    try:
        return os.stat(layout.events_log).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return True


def stream(layout: Layout, offset: int, follow: bool, out: BinaryIO) -> None:
    """Copy whole lines of the log from byte ``offset`` (a cut line at the
    end is held back until it is whole); with ``follow``, then every line
    appended, until the client leaves. An ``offset`` inside a line starts
    at the next one."""
    emitted = offset
    held = b""
    draining = False
    delays = poll_intervals()
    quiet_since = time.monotonic()
    try:
        log = open(layout.events_log, "rb")
    except FileNotFoundError:
        log = None
    try:
        if log is not None and offset > os.fstat(log.fileno()).st_size:
            offset = emitted = 0  # taken in the file set aside since: all of this one is new
        if log is not None and offset > 0:
            log.seek(offset - 1)
            if log.read(1) != b"\n":
                log.readline()  # the rest of the line the offset cut
                emitted = log.tell()
        while True:
            if log is None:
                try:
                    log = open(layout.events_log, "rb")
                except FileNotFoundError:
                    pass
                else:
                    log.seek(emitted)
            data = log.read(CHUNK) if log is not None else b""
            pending = held + data
            whole = pending.rfind(b"\n") + 1
            if whole:
                out.write(pending[:whole])
                out.flush()
                emitted += whole
                quiet_since = time.monotonic()
            held = pending[whole:]
            if data:
                delays = poll_intervals()
                continue
            if not follow:
                return
            if log is not None and not _is_current(layout, log.fileno()):
                if draining:
                    # Read to its end twice since it was set aside: the new
                    # file holds what follows.
                    log.close()
                    log, emitted, held, draining = None, 0, b"", False
                else:
                    draining = True  # a line written just before the rename may still come
                continue
            if time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
                out.write(b"\n")
                out.flush()
                quiet_since = time.monotonic()
            time.sleep(next(delays))
    finally:
        if log is not None:
            log.close()

