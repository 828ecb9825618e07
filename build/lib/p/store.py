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
from dataclasses import asdict, dataclass, fields
from typing import Any

from p_protocol import JOB_ID_RE, SHORT_ID_LEN, State

from . import paths
from .errors import PError
from .fsutil import atomic_write

ID_PREFIX_RE = re.compile(r"^[0-9a-f]{1,32}$")


@dataclass
class JobRecord:
    id: str
    worker: str
    cwd: str
    command: str
    status: str = State.RUNNING.value
    exit_code: int | None = None
    started_at: float = 0.0  # client clock
    ended_at: float | None = None  # client clock, from the worker's duration
    synced: bool = True
    # The last time the worker told us this job's state (client clock).
    checked_at: float = 0.0

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LEN]

    @property
    def state(self) -> State:
        return State(self.status)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        if not JOB_ID_RE.match(record.id):
            raise ValueError("malformed id")
        State(record.status)
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

    def _read_index(self) -> dict[str, dict[str, Any]] | None:
        try:
            with open(self.index_path) as src:
                index = json.load(src)
            if index.get("dir_mtime_ns") == self._dir_mtime():
                return index["jobs"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
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
        index = {"dir_mtime_ns": self._dir_mtime(), "jobs": jobs}
        # Not fsynced: the index is a cache that a reader rebuilds if it lags.
        atomic_write(self.index_path, json.dumps(index, separators=(",", ":")), durable=False)

    def _index(self) -> dict[str, dict[str, Any]]:
        jobs = self._read_index()
        if jobs is None:
            with self._locked():
                jobs = self._read_index()
                if jobs is None:
                    jobs = self._rebuild_index()
        return jobs

    # -- public ------------------------------------------------------------

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
            jobs = self._read_index()
            if jobs is None:
                jobs = self._rebuild_index()
            for record in records:
                atomic_write(self.record_path(record.id), json.dumps(record.to_dict(), indent=1))
                jobs[record.id] = record.to_dict()
            self._write_index(jobs)

    def delete(self, job_id: str) -> None:
        with self._locked():
            jobs = self._read_index()
            if jobs is None:
                jobs = self._rebuild_index()
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


def _clip(text: str, width: int = 24) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
