"""What a job's processes used, as the worker measured it: wall time, user
and system CPU seconds, peak resident memory.

CPU: the job's script runs the shell's `times` just before the job and just
after it has been waited for (``JobFile.CPU_TIMES``): the children's line
grows by exactly what the job's processes used, those its shell waited for
(a process that a job leaves running in the background is not counted).
Peak memory: no shell can ask the kernel for a child's ``ru_maxrss``, so
the agent samples, every SAMPLE_SECONDS while a job runs, the high-water
mark (``VmHWM``) of each process under the job's leader (the one whose pid
is its process group) and keeps the largest in ``JobFile.PEAK_RSS``: the peak of the job's largest
process, as far as the samples saw it (a process that lived less than a
sample's interval may be missed). A job no sample saw, or one that ran while
no agent did, has no peak: ``max_rss`` is null, never a guess.
"""

from __future__ import annotations

import os
import re
import sys
import threading

from p_protocol import JOB_ID_RE
from p_protocol.layout import JobFile, Layout

from .files import is_jobs_group, parse_float, read_file, read_pgid, write_file

SAMPLE_SECONDS = 0.25
# `times` prints "<user>m<seconds>s <sys>m<seconds>s", for the shell then its
# children; dash, bash and busybox differ in digits and spaces only.
_TIME_RE = re.compile(r"(\d+)m\s*(\d+(?:\.\d+)?)s")


def children_cpu(text: str | None) -> tuple[float, float] | None:
    """(user, sys) seconds of the job's processes from the two `times`
    outputs in ``CPU_TIMES``, or None if the file does not hold both."""
    if text is None:
        return None
    values = [int(minutes) * 60 + float(seconds) for minutes, seconds in _TIME_RE.findall(text)]
    if len(values) != 8:
        return None
    user, system = values[6] - values[2], values[7] - values[3]
    return round(max(0.0, user), 3), round(max(0.0, system), 3)


def measured(job_dir: str, started_at: float | None, ended_at: float | None) -> dict[str, float | int | None] | None:
    """The job's use as p_protocol.wire's ``rusage`` kind, once it ended;
    None where its script recorded no CPU times (a job its engine ran
    elsewhere, or one from an agent that did not measure)."""
    cpu = children_cpu(read_file(os.path.join(job_dir, JobFile.CPU_TIMES)))
    if cpu is None or started_at is None or ended_at is None:
        return None
    peak = parse_float(read_file(os.path.join(job_dir, JobFile.PEAK_RSS)))
    return {"wall": round(max(0.0, ended_at - started_at), 3), "user": cpu[0], "sys": cpu[1],
            "max_rss": int(peak) if peak is not None and peak >= 0 else None}


class PeakSampler:
    """Samples the memory of every running job of this worker (see above).
    Only for engines whose jobs run on this host."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.finished: set[str] = set()  # never looked at again
        self.peaks: dict[str, int] = {}

    def start(self) -> None:
        threading.Thread(target=self._run, name="peak-rss", daemon=True).start()

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(SAMPLE_SECONDS):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a failed sample costs one figure, never the agent
                print(f"sampling memory: {exc}", file=sys.stderr)

    def sample(self) -> None:
        groups = self._running_groups()
        if not groups:
            return
        # Walking each job's tree costs what the job has; a scan of /proc
        # costs what the host has, and is for kernels without `children`.
        members = {job_id: _descendants(group) for group, job_id in groups.items()}
        if any(found is None for found in members.values()):
            members = {job_id: set() for job_id in groups.values()}
            for pid, group, session in _processes():
                job_id = groups.get(group) or groups.get(session)
                if job_id is not None:
                    members[job_id].add(pid)
        for job_id, pids in members.items():
            peak = max((_high_water(pid) or 0 for pid in pids or ()), default=0)
            if peak > self.peaks.get(job_id, 0):
                self.peaks[job_id] = peak
                path = os.path.join(self.layout.job_dir(job_id), JobFile.PEAK_RSS)
                # An agent of another version may sample the same job.
                if peak > (parse_float(read_file(path)) or 0):
                    write_file(path, f"{peak}\n")

    def _running_groups(self) -> dict[int, str]:
        """Process group (or session) id of each running job: its ``pgid``."""
        groups = {}
        try:
            names = os.listdir(self.layout.jobs_dir)
        except FileNotFoundError:
            return {}
        for job_id in names:
            if job_id in self.finished or not JOB_ID_RE.match(job_id):
                continue
            job_dir = self.layout.job_dir(job_id)
            if os.path.exists(os.path.join(job_dir, JobFile.EXIT_CODE)):
                self.finished.add(job_id)
                self.peaks.pop(job_id, None)
                continue
            pgid = read_pgid(job_dir) if os.path.isdir(job_dir) else None
            if pgid is None:
                continue  # not started yet
            if is_jobs_group(pgid, job_dir):
                groups[pgid] = job_id
            else:
                # Lost without an end (its session killed, the worker
                # rebooted): its number may name another's processes now.
                self.finished.add(job_id)
                self.peaks.pop(job_id, None)
        return groups


def _descendants(leader: int) -> set[int] | None:
    """``leader`` and every process under it, from /proc's ``children``
    lists; None when this kernel has none (CONFIG_PROC_CHILDREN)."""
    found, todo = set(), [leader]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone meanwhile
        found.add(pid)
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as src:
                    todo += [int(child) for child in src.read().split() if int(child) not in found]
            except FileNotFoundError:
                if not os.path.exists(f"/proc/{pid}/task/{task}"):
                    continue  # the thread ended
                return None
            except (OSError, ValueError):
                continue
    return found


def _processes() -> list[tuple[int, int, int]]:
    """(pid, process group, session) of every process this user can see."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as src:
                stat = src.read()
            fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
            found.append((int(name), int(fields[2]), int(fields[3])))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def _high_water(pid: int) -> int | None:
    """Process ``pid``'s peak resident set, in bytes (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as src:
            for line in src:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
