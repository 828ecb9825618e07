"""The local job store: ``~/.local/share/p/jobs/<uuid>.json``, one record each.

The records are the truth. ``jobs.index.json`` holds all of them in one file
so that `p ls` reads one file, not thousands; it remembers the jobs
directory's mtime, and any write that did not go through here (or a crash
between a record and its index update) shows as a changed mtime, which makes
the next reader rebuild the index from the records.

Every record and index line is parsed into a checked ``JobRecord`` here and
nowhere else (`JobRecord.parse`), before anything sorts, prints or stores
it. A file that does not hold a job is ``Damaged``: it names the file and
the field, is listed by `p ls` and `p doctor`, and is never rewritten or
deleted unless the user asks (`p doctor --fix`).
"""

from __future__ import annotations

import json
import os
import re

from p_protocol import JOB_ID_RE, SHORT_ID_LEN, ProtocolError
from p_protocol.jobspec import FIELD_NAMES as SPEC_NAMES
from p_protocol.jobspec import JobSpec
from p_protocol.states import State
from p_protocol.wire import KINDS, SPEC, Field, check_fields

from . import events, paths
from .errors import PError
from .fsutil import atomic_write, locked

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import IO, Any

ID_PREFIX_RE = re.compile(r"^[0-9a-f]{1,32}$")
# A client-only status: a running job no worker has told us about for a
# while; it may have ended unseen. Agents send only p_protocol.states.
UNKNOWN = "unknown"
STATUSES = (*(state.value for state in State), UNKNOWN)
# Jobs that have not ended (as far as the client knows).
ACTIVE = (*(state.value for state in State if not state.finished), UNKNOWN)
INDEX_FORMAT = 2
QUARANTINE = "quarantine"

# A record's fields, declared as the protocol declares messages (the same
# kinds and checks): id, worker, cwd and command must be there, the rest
# default. The job's spec (p_protocol.jobspec) is kept flat, beside the
# client's own fields, so a record reads as one object.
F = Field
RECORD = (F("id", "id"), F("worker", "worker"), F("cwd", "str"),
          F("status", "str", optional=True), F("exit_code", "int", optional=True, nullable=True),
          F("started_at", "time", optional=True), F("ended_at", "time", optional=True, nullable=True),
          F("synced", "bool", optional=True), F("checked_at", "time", optional=True),
          F("spare", "spare", optional=True, nullable=True), F("workdir", "str", optional=True, nullable=True),
          F("sync_files", "count", optional=True, nullable=True),
          F("sync_bytes", "count", optional=True, nullable=True),
          F("rerun_of", "id", optional=True, nullable=True), F("reason", "text", optional=True, nullable=True),
          F("engine_id", "text", optional=True, nullable=True), F("node_list", "text", optional=True, nullable=True),
          F("rusage", "rusage", optional=True, nullable=True),
          F("pool", "worker", optional=True, nullable=True), F("position", "count", optional=True, nullable=True),
          F("gpu_ids", "indices", optional=True), F("excludes", "strs", optional=True), *SPEC)
# Fields that may hold null (the others take their default when absent).
NULLABLE = frozenset(field.name for field in RECORD if field.nullable and field.name not in SPEC_NAMES)
RECORD_NAMES = frozenset(field.name for field in RECORD)


class Damaged(Exception):
    """A record file (or index line) that holds no job: which, and why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def new_job_id() -> str:
    """A UUID4 as 32 hex digits (without importing uuid: startup time)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class JobRecord:
    """One job as the client knows it; a plain class for startup time."""

    FIELDS = tuple(field.name for field in RECORD if field.name not in SPEC_NAMES)

    def __init__(self, id: str, worker: str, cwd: str, spec: JobSpec, status: str = State.RUNNING.value,
                 exit_code: int | None = None, started_at: float = 0.0, ended_at: float | None = None,
                 synced: bool = True, checked_at: float = 0.0, spare: str | None = None,
                 workdir: str | None = None, sync_files: int | None = None, sync_bytes: int | None = None,
                 rerun_of: str | None = None, reason: str | None = None,
                 engine_id: str | None = None, node_list: str | None = None,
                 rusage: dict[str, float | int | None] | None = None,
                 pool: str | None = None, position: int | None = None, gpu_ids: list[int] | None = None,
                 excludes: list[str] | None = None) -> None:
        self.id = id
        self.worker = worker
        self.cwd = cwd
        # What the job was asked to be; its env keeps names and values, its
        # secrets only names.
        self.spec = spec
        self.status = status
        self.exit_code = exit_code
        self.started_at = started_at  # client clock
        self.ended_at = ended_at  # client clock, from the worker's duration
        self.synced = synced
        # The last time the worker told us this job's state (client clock).
        self.checked_at = checked_at
        # Names the worker's spare copy of the synced directory (Op.PREPARE).
        self.spare = spare
        # The job's workdir on the worker, as a path there.
        self.workdir = workdir
        # What the sync sent, as rsync counted it: regular files and bytes
        # over the link (None: not synced, or rsync did not say).
        self.sync_files = sync_files
        self.sync_bytes = sync_bytes
        # The job `p rerun` made this one from.
        self.rerun_of = rerun_of
        # Why it is queued or lost, as the worker said; its id in a
        # scheduling engine (Slurm's job id) and the node(s) it got there.
        self.reason = reason
        self.engine_id = engine_id
        self.node_list = node_list
        # What its processes used, as the worker measured it once it ended
        # (p_protocol.wire.RUSAGE); None until then, or where it could not.
        self.rusage = rusage
        self.pool = pool  # the pool its worker was chosen from (`p @POOL`), if any
        self.position = position  # its place in its worker's queue while it waits
        self.gpu_ids = gpu_ids or []  # the worker's GPUs it was given (`-g N`)
        # Its sync's `--exclude` patterns, which `p rerun` applies again.
        self.excludes = excludes or []

    @property
    def command(self) -> str:
        return self.spec.command

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LEN]

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in self.FIELDS}, **self.spec.to_json()}

    @classmethod
    def parse(cls, data: Any, where: str) -> JobRecord:
        """``data`` as a checked record, or ``Damaged`` naming ``where`` and
        the field. Fields this version does not know are left out."""
        if not isinstance(data, dict):
            raise Damaged(where, "not a JSON object")
        try:
            checked = check_fields(RECORD, {k: v for k, v in data.items() if k in RECORD_NAMES}, "")
        except ProtocolError as exc:
            raise Damaged(where, str(exc).lstrip(": ")) from None
        if checked["status"] is not None and checked["status"] not in STATUSES:
            raise Damaged(where, f"field 'status' must be one of {', '.join(STATUSES)}")
        spec_fields = {name: checked.pop(name) for name in SPEC_NAMES}
        spec = JobSpec(**{name: value for name, value in spec_fields.items() if value is not None})
        return cls(spec=spec, **{name: value for name, value in checked.items()
                                 if value is not None or name in NULLABLE})

    def checked(self) -> JobRecord:
        """Itself, once its values pass the checks a reader applies: nothing
        is stored that the next reader would refuse."""
        try:
            JobRecord.parse(self.to_dict(), f"job {self.short_id}")
        except Damaged as exc:
            raise PError(f"not storing job {self.short_id}: {exc.problem}") from None
        return self


def _only_checked(was: JobRecord, now: JobRecord) -> bool:
    """Whether ``now`` differs from ``was`` in its checked_at at most. Such a
    record is not rewritten (an fsync each: a refresh of 200 running jobs
    took half a second); the index carries the new time, and an index
    rebuilt from the records shows the older one, at worst an `unknown`."""
    return {**was.to_dict(), "checked_at": 0} == {**now.to_dict(), "checked_at": 0}


def read_record(path: str) -> JobRecord:
    """The job in the record file ``path``; ``Damaged`` if it holds none,
    ``OSError`` if it cannot be read."""
    with open(path, "rb") as src:
        text = src.read()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Damaged(path, f"not JSON ({exc})") from None
    record = JobRecord.parse(data, path)
    if os.path.basename(path) != f"{record.id}.json":
        raise Damaged(path, f"holds job {record.id}, not the one its name says")
    return record


class Store:
    def __init__(self) -> None:
        self.dir = paths.jobs_dir()
        self.index_path = os.path.join(paths.data_dir(), "jobs.index.json")
        self.lock_path = os.path.join(paths.data_dir(), ".lock")
        self.quarantine_dir = os.path.join(paths.data_dir(), QUARANTINE)
        # Record files that hold no job, as (path, problem): filled by every
        # read of the index, shown by `p ls`.
        self.damaged: list[tuple[str, str]] = []

    def record_path(self, job_id: str) -> str:
        if not JOB_ID_RE.match(job_id):
            raise PError(f"malformed job id {job_id!r}")
        return os.path.join(self.dir, f"{job_id}.json")

    def _locked(self) -> IO[str]:
        for directory in (paths.data_dir(), self.dir):  # makedirs' mode is the leaf's only
            os.makedirs(directory, mode=0o700, exist_ok=True)
        return locked(self.lock_path)

    def _dir_mtime(self) -> int:
        try:
            return os.stat(self.dir).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _read_header(self, src: Any) -> dict[str, Any] | None:
        """The index's header if it is fresh and well-formed, else None."""
        try:
            header = json.loads(src.readline())
        except ValueError:
            return None
        if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT \
                or header.get("dir_mtime_ns") != self._dir_mtime():
            return None
        count, active, damaged = header.get("count"), header.get("active"), header.get("damaged")
        if not KINDS["count"][1](count) or not KINDS["ids"][1](active) or not isinstance(damaged, list) \
                or not all(KINDS["strs"][1](entry) and len(entry) == 2 for entry in damaged):
            return None
        return header

    def _read_index(self) -> dict[str, JobRecord] | None:
        """Every record in the index, or None when it must be rebuilt
        (missing, stale, or any line that is not a record)."""
        index = self._read_lines()
        if index is None:
            return None
        jobs = {}
        try:
            for line in bytes(index.lines).splitlines():
                record = JobRecord.parse(json.loads(line), self.index_path)
                jobs[record.id] = record
        except (ValueError, Damaged):
            return None
        return jobs if len(jobs) == index.count else None  # else one job twice: the records say

    def _index_is_a_directory(self) -> PError:
        return PError(f"the job index {self.index_path} is a directory; remove it "
                      "(p rebuilds the index from the records)", exit_code=2)

    def scan(self) -> dict[str, JobRecord]:
        """Every record file read and checked (sets ``damaged``)."""
        jobs: dict[str, JobRecord] = {}
        damaged: list[tuple[str, str]] = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            names = []
        for name in names:
            if not name.endswith(".json"):
                continue  # our own temp files (.tmp-*), editors' backups
            path = os.path.join(self.dir, name)
            try:
                record = read_record(path)
            except Damaged as exc:
                damaged.append((path, exc.problem))
                continue
            except IsADirectoryError:
                damaged.append((path, "a directory, not a record file"))
                continue
            except OSError as exc:
                damaged.append((path, f"cannot be read: {exc.strerror}"))
                continue
            jobs[record.id] = record
        self.damaged = damaged
        return jobs

    def _rebuild_index(self) -> dict[str, JobRecord]:
        jobs = self.scan()
        self._write_index(jobs)
        return jobs

    def _write_index(self, jobs: dict[str, JobRecord]) -> None:
        self._write_lines(_Index.build(jobs, self.index_path))

    def _write_lines(self, index: _Index) -> None:
        """A header line (freshness, active jobs, damaged files), then one
        record a line, oldest first, so `recent` reads only the file's tail."""
        header = {"format": INDEX_FORMAT, "dir_mtime_ns": self._dir_mtime(), "count": index.count,
                  "active": index.active, "damaged": [list(entry) for entry in self.damaged]}
        if os.path.isdir(self.index_path):
            raise self._index_is_a_directory()
        # Not fsynced: the index is a cache that a reader rebuilds if it lags.
        head = json.dumps(header, separators=(",", ":")).encode()
        atomic_write(self.index_path, head + b"\n" + index.lines, durable=False)

    def _read_lines(self, *, counted: bool = True) -> _Index | None:
        """The index as its lines (see _Index), or None when it must be
        rebuilt. ``counted``: check the count of lines against the header;
        a save need not (3 ms in 10,000 lines), for its count moves with
        the lines it changes, so the next reader still finds any mismatch."""
        try:
            with open(self.index_path, "rb") as src:
                header = self._read_header(src)
                if header is None:
                    return None
                # Read once, into the buffer the saves edit (a newline first:
                # see _Index); each copy of 10,000 lines costs milliseconds.
                body = bytearray(1 + max(0, os.fstat(src.fileno()).st_size - src.tell()))
                body[0] = ord("\n")
                got = src.readinto(memoryview(body)[1:])
                del body[1 + got:]
        except IsADirectoryError:
            raise self._index_is_a_directory() from None
        except OSError:
            return None
        if len(body) > 1 and not body.endswith(b"\n") or counted and body.count(b"\n") - 1 != header["count"]:
            return None  # cut short, or lines added or lost behind our back
        index = _Index(body, header["count"], list(header["active"]), self.index_path)
        self.damaged = [(path, problem) for path, problem in header["damaged"]]
        return index

    def _lines_holding(self, ids: list[str], *, counted: bool = True
                       ) -> tuple[_Index, dict[str, JobRecord | None]]:
        """The index as its lines, and the records it holds for ``ids``;
        made anew from the records when it must be rebuilt or a line asked
        for holds no job."""
        index = self._read_lines(counted=counted)
        if index is not None:
            try:
                return index, {job_id: index.get(job_id) for job_id in ids}
            except (ValueError, Damaged):
                pass  # a line that holds no job: the records say
        jobs = self._rebuild_index()
        return _Index.build(jobs, self.index_path), {job_id: jobs.get(job_id) for job_id in ids}

    def _index(self) -> dict[str, JobRecord]:
        jobs = self._read_index()
        if jobs is None:
            with self._locked():
                jobs = self._current_index()
        return jobs

    def _current_index(self) -> dict[str, JobRecord]:
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
                    records = self._tail(src, header, count)
                    self.damaged = [(path, problem) for path, problem in header["damaged"]]
                    return records, header["count"]
        except IsADirectoryError:
            raise self._index_is_a_directory() from None
        except (OSError, ValueError, Damaged):
            pass  # rebuilt below
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
        records = {r.id: r for r in (JobRecord.parse(json.loads(line), self.index_path)
                                     for line in lines[-count:])}
        for job_id in header["active"]:
            if job_id not in records:
                records[job_id] = read_record(self.record_path(job_id))
        return sorted(records.values(), key=lambda record: record.started_at)

    def all(self) -> list[JobRecord]:
        return sorted(self._index().values(), key=lambda record: record.started_at)

    def save(self, *records: JobRecord) -> None:
        for record in records:
            record.checked()
        ended = []
        with self._locked():
            # A save need not count the lines: see _read_lines.
            index, befores = self._lines_holding([record.id for record in records], counted=False)
            for record in records:
                path = self.record_path(record.id)
                was = befores[record.id]
                if was is None or not _only_checked(was, record):
                    atomic_write(path, json.dumps(record.to_dict(), indent=1, allow_nan=False))
                try:
                    index.put(record)
                except ValueError:  # a line in its way holds no job: the records say (this one's written)
                    index = _Index.build(self._rebuild_index(), self.index_path)
                befores[record.id] = record  # the same job twice in one save: the second follows the first
                self.damaged = [entry for entry in self.damaged if entry[0] != path]
                event = _transition(None if was is None else was.status, record.status)
                if event is not None:
                    events.append(event, record.id, record.worker, record.status, record.exit_code, record.reason)
                    if record.finished and was is not None:
                        ended.append(record)
            self._write_lines(index)
        if ended:
            # Told once per job, as its end is logged once (p/notify.py).
            from . import notify

            notify.job_ended(ended)

    def delete(self, job_id: str, event: str = "removed") -> None:
        """The job's record; ``event`` names why in the event log."""
        with self._locked():
            path = self.record_path(job_id)
            index, held = self._lines_holding([job_id])
            gone = held[job_id]
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            if gone is not None:
                index.remove(job_id)
                events.append(event, job_id, gone.worker, gone.status, gone.exit_code)
            self.damaged = [entry for entry in self.damaged if entry[0] != path]
            self._write_lines(index)

    def rebuild(self) -> dict[str, JobRecord]:
        """Every record file read afresh, the index rewritten from them."""
        with self._locked():
            return self._rebuild_index()

    def quarantine(self) -> list[tuple[str, str]]:
        """Move every damaged record file into the quarantine folder and
        rebuild the index; what moved where."""
        moved = []
        with self._locked():
            self.scan()
            os.makedirs(self.quarantine_dir, mode=0o700, exist_ok=True)
            for path, _ in self.damaged:
                target = os.path.join(self.quarantine_dir, os.path.basename(path))
                serial = 1
                while os.path.lexists(target):  # an earlier one of that name stays
                    target = os.path.join(self.quarantine_dir, f"{os.path.basename(path)}.{serial}")
                    serial += 1
                os.rename(path, target)
                moved.append((path, target))
            self._rebuild_index()
        return moved

    def get(self, job_id: str) -> JobRecord:
        path = self.record_path(job_id)
        try:
            return read_record(path)
        except FileNotFoundError:
            raise PError(f"no job {job_id[:SHORT_ID_LEN]} in the local store; see `p ls`") from None
        except Damaged as exc:
            raise _damaged_error(path, exc.problem) from None
        except OSError as exc:
            raise PError(f"cannot read the record of job {job_id[:SHORT_ID_LEN]} {path}: {exc.strerror}") from None

    def _starting_with(self, wanted: str) -> list[JobRecord]:
        """The jobs whose id starts with ``wanted``, oldest first; only
        theirs are parsed when the index is sound."""
        index = self._read_lines()
        if index is not None:
            try:
                return [record for job_id in index.ids(wanted) for record in [index.get(job_id)]
                        if record is not None]
            except (ValueError, Damaged):
                pass
        return [record for record in self.all() if record.id.startswith(wanted)]

    def find(self, prefix: str) -> JobRecord:
        """The one job whose id starts with ``prefix`` (as `p ls` shows it)."""
        wanted = prefix.strip().lower()
        if wanted.startswith("p-"):
            wanted = wanted[2:]  # the tmux session name works too
        if not ID_PREFIX_RE.match(wanted):
            raise PError(f"{prefix!r} is not a job id; job ids are hex, as `p ls` shows them")
        matches = self._starting_with(wanted)
        if not matches:
            for path, problem in self.damaged:
                if os.path.basename(path).startswith(wanted):
                    raise _damaged_error(path, problem)
            raise PError(f"no job matches {prefix!r}; see `p ls`")
        if len(matches) > 1:
            shown = ", ".join(f"{r.id[:12]} ({_clip(r.command)})" for r in matches[:6])
            more = f" and {len(matches) - 6} more" if len(matches) > 6 else ""
            raise PError(f"job id {prefix!r} is ambiguous: {shown}{more}; type more characters")
        return matches[0]


class _Index:
    """The index's records as its raw lines, for writes that change a few
    records among many: only their lines are found, parsed and encoded.
    Parsing and rewriting every record on each save made a launch among
    10,000 records take a second. Every line starts with its job's id
    (``to_dict`` puts it first), so a job's line is found by a byte search;
    lines nobody asks for are passed on as they are, and a reader that
    parses them all (``_read_index``) rebuilds the index from the records
    if one holds no job."""

    def __init__(self, body: bytearray, count: int, active: list[str], where: str) -> None:
        # Each line starts after a newline, the first too (``body`` starts
        # with one). Edited in place: a save moves only what follows its line.
        self.body = body
        self.count, self.active, self.where = count, active, where

    @classmethod
    def build(cls, jobs: dict[str, JobRecord], where: str) -> _Index:
        ordered = sorted(jobs.values(), key=lambda record: record.started_at)
        return cls(bytearray(b"\n" + b"".join(_encode(record) + b"\n" for record in ordered)), len(ordered),
                   [record.id for record in ordered if record.status in ACTIVE], where)

    @property
    def lines(self) -> memoryview:
        return memoryview(self.body)[1:]

    def ids(self, prefix: str) -> list[str]:
        """The ids starting with ``prefix`` (hex), oldest first."""
        pattern = re.compile(rb'\n\{"id":"(' + prefix.encode() + rb'[0-9a-f]*)",')
        return [match.group(1).decode() for match in pattern.finditer(self.body)]

    def get(self, job_id: str) -> JobRecord | None:
        """The record the index holds for ``job_id``; ValueError or Damaged
        if its line holds none."""
        span = self._span(job_id)
        if span is None:
            return None
        record = JobRecord.parse(json.loads(self.body[span[0]:span[1]]), self.where)
        if record.id != job_id:
            raise Damaged(self.where, f"the line of job {job_id} holds job {record.id}")
        return record

    def put(self, record: JobRecord) -> None:
        """Add or replace ``record``, keeping the lines in order of start."""
        line = _encode(record)
        span = self._span(record.id)
        if span is not None and self._started(self.body[span[0]:span[1]]) == record.started_at:
            self.body[span[0]:span[1]] = line
        else:
            if span is not None:
                self.remove(record.id)
            last = self.body.rfind(b"\n", 0, len(self.body) - 1) + 1
            if not self.count or self._started(self.body[last:-1]) <= record.started_at:
                self.body += line + b"\n"  # the usual case: the newest job
            else:  # older than the newest (a record adopted or restored): its place in order
                lines = self.body[1:-1].split(b"\n")
                at, high = 0, len(lines)  # after those that started no later, as a stable sort
                while at < high:
                    middle = (at + high) // 2
                    if record.started_at < self._started(lines[middle]):
                        high = middle
                    else:
                        at = middle + 1
                lines.insert(at, line)
                self.body = bytearray(b"\n" + b"\n".join(lines) + b"\n")
            self.count += 1
        if record.status in ACTIVE:
            if record.id not in self.active:
                self.active.append(record.id)
        elif record.id in self.active:
            self.active.remove(record.id)

    def remove(self, job_id: str) -> None:
        span = self._span(job_id)
        if span is not None:
            del self.body[span[0]:span[1] + 1]
            self.count -= 1
        if job_id in self.active:
            self.active.remove(job_id)

    def _span(self, job_id: str) -> tuple[int, int] | None:
        """Where the line of ``job_id`` starts and ends (at its newline)."""
        start = self.body.find(b'\n{"id":"' + job_id.encode() + b'",')
        if start < 0:
            return None
        end = self.body.find(b"\n", start + 1)
        return start + 1, end if end >= 0 else len(self.body)

    @staticmethod
    def _started(line: bytes) -> float:
        """ValueError if the line holds no JSON object."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        started = data.get("started_at", 0.0)
        return float(started) if isinstance(started, (int, float)) else 0.0


def _encode(record: JobRecord) -> bytes:
    return json.dumps(record.to_dict(), separators=(",", ":"), allow_nan=False).encode()


# How a stored status change is named in the event log (p/events.py);
# any other state is named as it is (stopped, lost, ...).
_EVENT_OF = {State.RUNNING.value: "started", State.DONE.value: "ended"}


def _transition(was: str | None, now: str) -> str | None:
    """The event a record's status change from ``was`` (None: a new record)
    to ``now`` is, if any. `unknown` is no news: it only hides a running job."""
    if was is None:
        return "submitted"
    if now == UNKNOWN or now == (State.RUNNING.value if was == UNKNOWN else was):
        return None
    return _EVENT_OF.get(now, now)


def damaged_line(path: str, problem: str) -> str:
    """How every command names a damaged record file: one line."""
    return f"p: damaged job record {path}: {problem}"


def _damaged_error(path: str, problem: str) -> PError:
    return PError(f"damaged job record {path}: {problem}; `p doctor --fix` moves it aside")


def _newest_and_active(records: list[JobRecord], count: int) -> list[JobRecord]:
    newest = records[-count:] if count else []
    chosen = {r.id for r in newest}
    return [r for r in records if r.id in chosen or r.status in ACTIVE]


def _clip(text: str, width: int = 24) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
