"""Small file and timing helpers of the agent, shared by the jobs and the
engines."""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterator

from p_protocol.layout import END_FILE_SIZE, JobFile

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

# Waiters poll job files: every millisecond for the first ten (a short
# job, such as `p -- true`, ends within them, and a poll costs a few stat
# calls), then less and less often, so a long job costs nothing noticeable.
POLL_QUICK = 0.001
QUICK_POLLS = 10
POLL_SLOW = 0.002  # where the backing off starts
POLL_MAX = 0.25
# Of those polls, one in this many (the first after ~15 ms, then ~0.15 s,
# then every ~3 s) also asks the engine whether the job is gone (which may
# cost a process, such as `tmux list-sessions`).
ASK_ENGINE_EVERY = 12


def poll_intervals() -> Iterator[float]:
    for _ in range(QUICK_POLLS):
        yield POLL_QUICK
    delay = POLL_SLOW
    while True:
        yield delay
        delay = min(POLL_MAX, delay * 1.25)


def write_file(path: str, text: str, mode: int = 0o600) -> None:
    """Write atomically: readers see the old file or the whole new one."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def create_file(path: str, text: str) -> None:
    """Write a new file in place, no rename: for a job's files before the
    job is queued, when no reader looks for them (a rename each cost a
    start ~0.5 ms, and far more on a busy disk). An agent killed meanwhile
    leaves a job that never started, which is lost either way."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def fill_in(path: str, text: str) -> None:
    """Write a job's end file over the space reserved for it (see
    ``JobFile.PENDING``), so a full disk cannot leave it empty."""
    pending = os.path.join(os.path.dirname(path), JobFile.PENDING, os.path.basename(path))
    try:
        fd = os.open(pending, os.O_WRONLY)
    except FileNotFoundError:
        write_file(path, text)  # a job started by an agent that reserved nothing
        return
    with os.fdopen(fd, "w") as out:
        out.write(text.strip().ljust(END_FILE_SIZE - 1) + "\n")
    os.replace(pending, path)


def read_file(path: str) -> str | None:
    try:
        with open(path) as src:
            return src.read()
    except FileNotFoundError:
        return None


def read_pgid(job_dir: str) -> int | None:
    """The job's process group, as its script wrote it; never our own
    group or init's, whatever the file says."""
    text = read_file(os.path.join(job_dir, JobFile.PGID))
    try:
        pgid = int(text.strip()) if text else None
    except ValueError:
        return None
    return pgid if pgid and pgid > 1 and pgid != os.getpgid(0) else None


def parse_float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def rmtree(path: str) -> None:
    def make_writable(func: Any, target: str, _exc: Any) -> None:
        # Build trees often hold read-only directories (Go's module cache...).
        os.chmod(os.path.dirname(target), stat.S_IRWXU)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, stat.S_IRWXU)
        func(target)

    if os.path.lexists(path):
        # Imported where it is used, as elsewhere in the agent: shutil costs
        # every start of the agent ~2 ms, and most need none of it.
        import shutil

        shutil.rmtree(path, onerror=make_writable)


# How far apart the agent's start time of a job and its process group
# leader's may be: a pgid file naming a process that started at another
# time names a number reused since (after a reboot, or long after the job).
LEADER_SLACK = 60.0


def is_jobs_group(pgid: int, job_dir: str) -> bool:
    """Whether process group ``pgid`` still is the job's. A group outlives
    its leader, and Linux hands out no pid still in use as a group id: a
    live group without its leader is the job's; one with a leader is the
    job's if that leader started when the job did."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False  # gone, or another user's by now
    leader = _started(pgid)
    started_at = parse_float(read_file(os.path.join(job_dir, JobFile.STARTED_AT)))
    if leader is None or started_at is None:
        return leader is None  # no leader: the job's; no start time: trust nothing
    return abs(leader - started_at) <= LEADER_SLACK


def _started(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as src:
            fields = src.read()
        ticks = int(fields[fields.rindex(")") + 2:].split()[19])  # field 22: starttime
        return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


@functools.cache
def _boot_time() -> int:
    """Read once: the memory sampler asks about every job four times a second."""
    with open("/proc/stat") as src:
        return next(int(line.split()[1]) for line in src if line.startswith("btime "))
