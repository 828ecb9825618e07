"""The local job store: ``~/.local/share/p/jobs/<uuid>.json``, one record each.

The records are the truth. ``jobs.index.json`` holds all of them in one file
so that `p ls` reads one file, not thousands; it remembers the jobs
directory's mtime, and any write that did not go through here (or a crash
between a record and its index update) shows as a changed mtime, which makes
the next reader rebuild the index from the records.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from p_protocol import JOB_ID_RE, SHORT_ID_LEN, SPARE_KEY_RE
from p_protocol.states import State

from . import paths
from .errors import PError
from .fsutil import atomic_write

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

ID_PREFIX_RE = re.compile(r"^[0-9a-f]{1,32}$")
# A client-only status: a running job no worker has told us about for a
# while; it may have ended unseen. Agents send only p_protocol.states.
UNKNOWN = "unknown"
STATUSES = (*(state.value for state in State), UNKNOWN)
ACTIVE = (State.RUNNING.value, UNKNOWN)
INDEX_FORMAT = 1


def new_job_id() -> str:
    """A UUID4 as 32 hex digits (without importing uuid: startup time)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class JobRecord:
    """One job as the client knows it; a plain class for startup time."""

    FIELDS = ("id", "worker", "cwd", "command", "status", "exit_code", "started_at", "ended_at",
              "synced", "checked_at", "spare")

    def __init__(self, id: str, worker: str, cwd: str, command: str, status: str = State.RUNNING.value,
                 exit_code: int | None = None, started_at: float = 0.0, ended_at: float | None = None,
                 synced: bool = True, checked_at: float = 0.0, spare: str | None = None) -> None:
        self.id = id
        self.worker = worker
        self.cwd = cwd
        self.command = command
        self.status = status
        self.exit_code = exit_code
        self.started_at = started_at  # client clock
        self.ended_at = ended_at  # client clock, from the worker's duration
        self.synced = synced
        # The last time the worker told us this job's state (client clock).
        self.checked_at = checked_at
        # Names the worker's spare copy of the synced directory (Op.PREPARE).
        self.spare = spare

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LEN]

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        record = cls(**{k: v for k, v in data.items() if k in cls.FIELDS})
        if not JOB_ID_RE.match(record.id):
            raise ValueError("malformed id")
        if record.spare is not None and not SPARE_KEY_RE.match(record.spare):
            raise ValueError("malformed spare key")
        if record.status not in STATUSES:
            raise ValueError(f"unknown status {record.status!r}")
        return record


class Store:
    def __init__(self) -> None:
        self.dir = paths.jobs_dir()
        self.index_path = os.path.join(paths.data_dir(), "jobs.index.json")
        self.lock_path = os.path.join(paths.data_dir(), ".lock")

    def record_path(self, job_id: str) -> str:
        if not JOB_ID_RE.match(job_id):
            raise PError(f"malformed job id {job_id!r}")
        return os.path.join(self.dir, f"{job_id}.json")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.dir, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _dir_mtime(self) -> int:
        try:
            return os.stat(self.dir).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _read_header(self, src: Any) -> dict[str, Any] | None:
        header = json.loads(src.readline())
        fresh = header.get("format") == INDEX_FORMAT and header.get("dir_mtime_ns") == self._dir_mtime()
        return header if fresh else None

    def _read_index(self) -> dict[str, dict[str, Any]] | None:
        try:
            with open(self.index_path) as src:
                if self._read_header(src) is None:
                    return None
                return {data["id"]: data for data in map(json.loads, src)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _rebuild_index(self) -> dict[str, dict[str, Any]]:
        jobs: dict[str, dict[str, Any]] = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            names = []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, name)) as src:
                    record = JobRecord.from_dict(json.load(src))
            except (OSError, ValueError, TypeError):
                continue  # a foreign or damaged file is not a job
            jobs[record.id] = record.to_dict()
        self._write_index(jobs)
        return jobs

    def _write_index(self, jobs: dict[str, dict[str, Any]]) -> None:
        """A header line (freshness, active jobs), then one record a line,
        oldest first, so `recent` reads only the file's tail."""
        ordered = sorted(jobs.values(), key=lambda data: data.get("started_at") or 0.0)
        active = [data["id"] for data in ordered if data.get("status") in ACTIVE]
        header = {"format": INDEX_FORMAT, "dir_mtime_ns": self._dir_mtime(), "count": len(ordered),
                  "active": active}
        lines = [json.dumps(header, separators=(",", ":"))]
        lines += [json.dumps(data, separators=(",", ":")) for data in ordered]
        # Not fsynced: the index is a cache that a reader rebuilds if it lags.
        atomic_write(self.index_path, "\n".join(lines) + "\n", durable=False)

    def _index(self) -> dict[str, dict[str, Any]]:
        jobs = self._read_index()
        if jobs is None:
            with self._locked():
                jobs = self._current_index()
        return jobs

    def _current_index(self) -> dict[str, dict[str, Any]]:
        """The index, rebuilt if stale; call with the lock held."""
        jobs = self._read_index()
        return self._rebuild_index() if jobs is None else jobs

    # -- public ------------------------------------------------------------

    def recent(self, count: int) -> tuple[list[JobRecord], int]:
        """The ``count`` newest jobs plus every active one, and how many jobs
        there are in all: what `p ls` shows, read without parsing them all."""
        try:
            with open(self.index_path, "rb") as src:
                header = self._read_header(src)
                if header is not None:
                    return self._tail(src, header, count), int(header["count"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        records = self.all()
        return _newest_and_active(records, count), len(records)

    def _tail(self, src: Any, header: dict[str, Any], count: int) -> list[JobRecord]:
        body_start = src.tell()
        end = src.seek(0, os.SEEK_END)
        span = 512 * (count + 1)
        while True:
            start = max(body_start, end - span)
            src.seek(start)
            lines = src.read().splitlines()
            if start > body_start:
                lines = lines[1:]  # the first may be cut
            if len(lines) >= count or start == body_start:
                break
            span *= 2
        records = {r.id: r for r in (JobRecord.from_dict(json.loads(line)) for line in lines[-count:])}
        for job_id in header["active"]:
            if job_id not in records:
                try:
                    records[job_id] = self.get(job_id)
                except PError:
                    continue
        return sorted(records.values(), key=lambda record: record.started_at)

    def all(self) -> list[JobRecord]:
        records = []
        for data in self._index().values():
            try:
                records.append(JobRecord.from_dict(data))
            except (ValueError, TypeError):
                continue
        records.sort(key=lambda record: record.started_at)
        return records

    def save(self, *records: JobRecord) -> None:
        with self._locked():
            jobs = self._current_index()
            for record in records:
                atomic_write(self.record_path(record.id), json.dumps(record.to_dict(), indent=1))
                jobs[record.id] = record.to_dict()
            self._write_index(jobs)

    def delete(self, job_id: str) -> None:
        with self._locked():
            jobs = self._current_index()
            try:
                os.unlink(self.record_path(job_id))
            except FileNotFoundError:
                pass
            jobs.pop(job_id, None)
            self._write_index(jobs)

    def get(self, job_id: str) -> JobRecord:
        try:
            with open(self.record_path(job_id)) as src:
                return JobRecord.from_dict(json.load(src))
        except FileNotFoundError:
            raise PError(f"no job {job_id[:SHORT_ID_LEN]} in the local store; see `p ls`") from None
        except (ValueError, TypeError):
            raise PError(f"the record of job {job_id[:SHORT_ID_LEN]} is damaged: {self.record_path(job_id)}") from None

    def find(self, prefix: str) -> JobRecord:
        """The one job whose id starts with ``prefix`` (as `p ls` shows it)."""
        wanted = prefix.strip().lower()
        if wanted.startswith("p-"):
            wanted = wanted[2:]  # the tmux session name works too
        if not ID_PREFIX_RE.match(wanted):
            raise PError(f"{prefix!r} is not a job id; job ids are hex, as `p ls` shows them")
        matches = [record for record in self.all() if record.id.startswith(wanted)]
        if not matches:
            raise PError(f"no job matches {prefix!r}; see `p ls`")
        if len(matches) > 1:
            shown = ", ".join(f"{r.id[:12]} ({_clip(r.command)})" for r in matches[:6])
            more = f" and {len(matches) - 6} more" if len(matches) > 6 else ""
            raise PError(f"job id {prefix!r} is ambiguous: {shown}{more}; type more characters")
        return matches[0]


def _newest_and_active(records: list[JobRecord], count: int) -> list[JobRecord]:
    newest = records[-count:] if count else []
    chosen = {r.id for r in newest}
    return [r for r in records if r.id in chosen or r.status in ACTIVE]


def _clip(text: str, width: int = 24) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
