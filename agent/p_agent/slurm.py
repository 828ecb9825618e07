"""The Slurm engine: each job is a batch job of the cluster this agent's
host is a login node of.

``sbatch`` runs the job's batch.sh on a compute node; it starts a tmux
server of the job's own there (in the foreground, so Slurm tracks and ends
it with the job) running the same run.sh as the tmux engine, which records
the job's end in the job directory: on the shared filesystem, where the
agent reads it. `p attach` reaches that tmux through ``srun --overlap``.
Finished jobs leave Slurm's memory after MinJobAge and there may be no
accounting, so Slurm is asked only what it alone knows (queued and why, on
which nodes, ended by a time limit or a failed node), all of the user's jobs
in one ``squeue``, and what it says of an end is written down at once.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Container
from shlex import quote
from typing import NamedTuple

from p_protocol import STOP_GRACE
from p_protocol.layout import JobFile, Layout
from p_protocol.states import State

from . import events, scripts
from .executor import EngineError, JobStart, Verdict
from .files import fill_in, read_file, read_pgid, write_file
from .tmux import Tmux, session_name, status_left

TOOLS = ("sbatch", "squeue", "scancel", "scontrol")
# One squeue serves every question asked within this long (a `p ls` of
# many jobs, a waiter's poll); a start or a signal asks afresh.
SQUEUE_CACHE = 1.0
SQUEUE_TIMEOUT = 30.0
# What `squeue -o` prints per job: id, state, name, nodes, reason. The name
# (ours are tame) is in the middle so that a `|` in another job's name only
# garbles that job's nodes and reason.
SQUEUE_FORMAT = "%i|%T|%j|%N|%r"
_SQUEUE_LINE = re.compile(r"^([0-9]+)\|([A-Z_]+)\|(.*)\|([^|]*)\|([^|]*)$")
# Slurm states: waiting to run, holding nodes, and ended by Slurm itself
# (COMPLETED and FAILED are the job's own ends: its script records them).
QUEUED_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                            "RESIZING"})
SLURM_ENDS = {"TIMEOUT": State.TIMEOUT, "DEADLINE": State.TIMEOUT, "CANCELLED": State.STOPPED,
              "NODE_FAIL": State.LOST, "PREEMPTED": State.LOST, "BOOT_FAIL": State.LOST,
              "OUT_OF_MEMORY": State.LOST}
# Slurm's reasons that say nothing.
EMPTY_REASONS = frozenset({"", "None", "(null)"})


class SlurmJob(NamedTuple):
    state: str
    nodes: str | None
    reason: str | None


class SlurmError(EngineError):
    pass


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """squeue's lines (SQUEUE_FORMAT) as checked values; what does not parse
    is someone else's odd job name or garbage, and is skipped."""
    jobs = {}
    for line in text.splitlines():
        match = _SQUEUE_LINE.match(line.strip())
        if match is None:
            continue
        job_id, state, _name, nodes, reason = match.groups()
        jobs[job_id] = SlurmJob(state, _plain(nodes) or None,
                                None if reason.strip() in EMPTY_REASONS else _plain(reason))
    return jobs


def _plain(text: str, limit: int = 200) -> str:
    """Untrusted text shown to the user: printable, one line, bounded."""
    return "".join(char for char in text if char.isprintable()).strip()[:limit]


class SlurmJobs:
    """All of the user's jobs as one squeue saw them (``blind``: squeue
    failed, so every job that has not recorded its end counts as held)."""

    def __init__(self, layout: Layout, jobs: dict[str, SlurmJob], blind: str | None = None) -> None:
        self.layout = layout
        self.jobs = jobs
        self.blind = blind

    def lookup(self, job_id: str) -> tuple[str | None, SlurmJob | None]:
        engine_id = engine_id_of(self.layout.job_dir(job_id))
        return engine_id, self.jobs.get(engine_id) if engine_id else None

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, str):
            return False
        engine_id, job = self.lookup(job_id)
        if self.blind is not None:
            return engine_id is not None and not os.path.exists(
                os.path.join(self.layout.job_dir(job_id), JobFile.EXIT_CODE))
        return job is not None and (job.state in QUEUED_STATES or job.state in RUNNING_STATES)

    def __bool__(self) -> bool:
        return self.blind is not None or any(
            job.state in QUEUED_STATES or job.state in RUNNING_STATES for job in self.jobs.values())


def engine_id_of(job_dir: str) -> str | None:
    text = (read_file(os.path.join(job_dir, JobFile.ENGINE_ID)) or "").strip()
    return text if text.isdigit() else None


def node_socket(job_id: str) -> str:
    """The job's tmux socket on its compute node: node-local (a unix socket
    on a shared filesystem is no use to another host) and short."""
    return f"/tmp/p-{os.getuid()}/{job_id}.sock"


class SlurmExecutor:
    name = "slurm"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.lock = threading.Lock()
        self.cached: SlurmJobs | None = None
        self.cached_at = 0.0

    def setup(self) -> None:
        Tmux(self.layout).write_conf()  # the compute nodes' tmux reads it from the shared home

    # -- start -------------------------------------------------------------

    def start(self, job: JobStart) -> None:
        path = os.path.join
        spec = job.spec
        launcher = ["srun", f"--nodes={spec.nodes}", "--ntasks-per-node=1"] if (spec.nodes or 1) > 1 else None
        sock = node_socket(job.job_id)
        write_file(path(job.job_dir, JobFile.SCRIPT),
                   scripts.run_sh(job.job_id, job.job_dir, job.workdir, job.command, sock, self.layout.events_log,
                                  tty=job.tty, expect_client=job.expect_client, launcher=launcher,
                                  timeout=spec.timeout))
        session = session_name(job.job_id)
        write_file(path(job.job_dir, "tmux_session"), session)
        write_file(path(job.job_dir, "batch.sh"), BATCH_SH.format(
            job_id=job.job_id, job_dir=quote(job.job_dir), sock=quote(sock), record_fn=scripts.record_fn(),
            now_fn=scripts.NOW_FN,
            tmux=" ".join(quote(word) for word in ["tmux", "-S", sock, "-f", self.layout.tmux_conf]),
            session=quote(session), cols=max(job.cols, 20), rows=max(job.rows, 5), workdir=quote(job.workdir),
            run_sh=quote(path(job.job_dir, JobFile.SCRIPT)), status_left=quote(status_left(job, session)),
            capture=quote("exec cat >> " + quote(path(job.job_dir, JobFile.OUTPUT))),
            node_list=JobFile.NODE_LIST, exitcode=JobFile.EXIT_CODE, ended_at=JobFile.ENDED_AT,
            log_end=JobFile.LOG_END, output=JobFile.OUTPUT, engine_end=JobFile.ENGINE_END,
            events_log=quote(self.layout.events_log)))
        write_file(path(job.job_dir, "attach.sh"), ATTACH_SH.format(
            job_dir=quote(job.job_dir), sock=quote(sock), session=quote("=" + session),
            pgid=JobFile.PGID, exitcode=JobFile.EXIT_CODE, engine_id=JobFile.ENGINE_ID,
            output=JobFile.OUTPUT))
        argv = ["sbatch", "--parsable", f"--job-name={session}", f"--chdir={job.workdir}",
                f"--output={path(job.job_dir, 'slurm.out')}", *sbatch_resources(spec), *spec.sbatch_args,
                path(job.job_dir, "batch.sh")]
        result = _run(argv)
        # `--parsable` prints "<id>" or "<id>;<cluster>".
        engine_id = result.stdout.strip().split(";")[0]
        if result.returncode != 0 or not engine_id.isdigit():
            raise SlurmError(f"sbatch refused the job: {_last_line(result.stderr or result.stdout)}")
        write_file(path(job.job_dir, JobFile.ENGINE_ID), engine_id)
        self._forget()

    # -- inspect -----------------------------------------------------------

    def alive(self) -> SlurmJobs:
        with self.lock:
            if self.cached is None or time.monotonic() - self.cached_at > SQUEUE_CACHE:
                self.cached = self._squeue()
                self.cached_at = time.monotonic()
            return self.cached

    def _squeue(self) -> SlurmJobs:
        result = _run(["squeue", "--me", "--states=all", "--noheader", "--format", SQUEUE_FORMAT])
        if result.returncode != 0:
            return SlurmJobs(self.layout, {}, blind=_last_line(result.stderr))
        return SlurmJobs(self.layout, parse_squeue(result.stdout))

    def _forget(self) -> None:
        with self.lock:
            self.cached = None

    def verdict(self, job_id: str, alive: Container[str]) -> Verdict:
        job_dir = self.layout.job_dir(job_id)
        if not isinstance(alive, SlurmJobs):
            # Just submitted (the start's own view): queued, by definition;
            # asking squeue now would only slow the start down.
            return Verdict(State.QUEUED, None, engine_id_of(job_dir))
        jobs = alive
        engine_id, job = jobs.lookup(job_id)
        nodes = (read_file(os.path.join(job_dir, JobFile.NODE_LIST)) or "").strip() or (job.nodes if job else None)
        nodes = _plain(nodes) if nodes else None
        ended = (read_file(os.path.join(job_dir, JobFile.ENGINE_END)) or "").split(None, 1)
        if ended and ended[0] in SLURM_ENDS:
            reason = _plain(ended[1]) if len(ended) > 1 else None
            return Verdict(SLURM_ENDS[ended[0]], reason, engine_id, nodes)
        if job is None:
            return Verdict(None, None, engine_id, nodes)
        if job.state in QUEUED_STATES and read_pgid(job_dir) is None:
            return Verdict(State.QUEUED, job.reason, engine_id, nodes)
        if job.state in SLURM_ENDS and not os.path.exists(os.path.join(job_dir, JobFile.EXIT_CODE)):
            # Slurm ended it where its script could not say (a failed node):
            # written down now, before Slurm forgets the job.
            reason = f"{job.state} on {job.nodes}" if job.nodes else job.state
            record_end(job_dir, f"{job.state} {reason}")
            events.append(self.layout, "ended", job_id, exit_code=128 + signal.SIGTERM, slurm=job.state)
            return Verdict(SLURM_ENDS[job.state], reason, engine_id, nodes)
        return Verdict(None, None, engine_id, nodes)

    # -- control -----------------------------------------------------------

    def signal(self, job_id: str, signum: int) -> None:
        self._forget()  # a view from before the job started would cancel it as queued
        engine_id, job = self.alive().lookup(job_id)
        if engine_id is None or job is None:
            return
        job_dir = self.layout.job_dir(job_id)
        # The job's own pgid file is the proof that it runs: squeue may still
        # say PENDING or CONFIGURING for a moment after the script started.
        if job.state in QUEUED_STATES and read_pgid(job_dir) is None:
            if signum in (signal.SIGTERM, signal.SIGKILL):
                # Nothing runs yet to catch a signal: it never will.
                _run(["scancel", engine_id])
                if read_pgid(job_dir) is None:  # else it started meanwhile: batch.sh records the end
                    record_end(job_dir, "CANCELLED before it started", 128 + signum)
                    events.append(self.layout, "ended", job_id, exit_code=128 + signum, slurm="CANCELLED")
        elif signum == signal.SIGKILL or not self._signal_group(job_id, engine_id, signum):
            # --full: the batch step too, where the job runs (in its tmux);
            # every process of it, its tmux and run.sh too, at once.
            _run(["scancel", "--full", f"--signal={signal.Signals(signum).name[3:]}", engine_id])
        self._forget()

    def _signal_group(self, job_id: str, engine_id: str, signum: int) -> bool:
        """``signum`` to the job's own process group on its node, through a
        step of its allocation, as the tmux engine sends it: its tmux and
        run.sh live on to record how it ended (a job that traps SIGTERM gets
        its grace). False where that cannot be done (no pgid yet, srun
        --overlap refused): the caller signals the whole job instead."""
        pgid = read_pgid(self.layout.job_dir(job_id))
        if pgid is None:
            return False
        name = signal.Signals(signum).name[3:]
        result = _run(["srun", f"--jobid={engine_id}", "--overlap", "--quiet", "kill", f"-{name}", "--", f"-{pgid}"])
        return result.returncode == 0

    def attach_argv(self, job_id: str, ctrl_c_detaches: bool = False) -> list[str] | None:
        # ctrl_c_detaches: not here yet; the job's tmux runs on its compute node.
        if job_id not in self.alive():
            return None
        return ["sh", os.path.join(self.layout.job_dir(job_id), "attach.sh")]

    def close(self, job_id: str) -> None:
        jobs = self.alive()
        engine_id, _job = jobs.lookup(job_id)
        if engine_id is not None and job_id in jobs:
            _run(["scancel", engine_id])
            self._forget()

    def end_marker(self, job_id: str) -> bytes:
        return scripts.end_marker(job_id)

    def retire(self) -> None:
        pass  # every job's tmux is its own, and leaves with it


def sbatch_resources(spec: object) -> list[str]:
    """The run form's resources as sbatch options (p_protocol.jobspec)."""
    options = []
    gpus, cpus, mem, nodes, timeout = (getattr(spec, name) for name in ("gpus", "cpus", "mem", "nodes", "timeout"))
    if gpus:
        options.append(f"--gpus={gpus}")
    if cpus:
        options.append(f"--cpus-per-task={cpus}")
    if mem:
        options.append(f"--mem={math.ceil(mem / (1 << 20))}M")
    if nodes:
        options.append(f"--nodes={nodes}")
    if timeout:
        # Slurm counts minutes and checks late: run.sh's watchdog keeps
        # the exact time (scripts.py), this is the backstop. Slurm's clock
        # starts before run.sh's, so the backstop leaves the watchdog its
        # SIGTERM, the grace and a minute more.
        options.append(f"--time={math.ceil((timeout + STOP_GRACE + 60) / 60)}")
    return options


def record_end(job_dir: str, how: str, exit_code: int = 128 + signal.SIGTERM) -> None:
    """Slurm's end of a job whose script recorded none: how it ended, then
    the end files as the script would have written them."""
    write_file(os.path.join(job_dir, JobFile.ENGINE_END), how + "\n")
    output = os.path.join(job_dir, JobFile.OUTPUT)
    size = os.path.getsize(output) if os.path.exists(output) else 0
    for name, text in ((JobFile.ENDED_AT, f"{time.time():.3f}"), (JobFile.LOG_END, str(size)),
                       (JobFile.EXIT_CODE, str(exit_code))):
        if not os.path.exists(os.path.join(job_dir, JobFile.EXIT_CODE)):
            fill_in(os.path.join(job_dir, name), text)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=SQUEUE_TIMEOUT)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} is not installed on this login node") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} did not answer within {SQUEUE_TIMEOUT:.0f}s") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return _plain(lines[-1]) if lines else "no reason given"


# Why each step:
# - The tmux server runs in the foreground (-D) as this script's child, so
#   Slurm counts it (and the job under it) as the job's and ends it with
#   the job; `exit-empty on` once the session exists lets it exit with it.
# - run.sh's job writes `pgid` once it runs in the session: attach.sh
#   waits for that.
# - Slurm's SIGTERM (scancel, a time limit) reaches every process of the
#   job, run.sh too; this script traps it and, once tmux is gone, records
#   the end run.sh could not, and whether a time limit caused it (squeue's
#   reason, while the job is completing, says TimeLimit).
# - It exits with the job's status, so Slurm's COMPLETED/FAILED agree.
BATCH_SH = """\
#!/bin/sh
# Generated by p-agent for job {job_id}: runs its run.sh in a tmux of its
# own on this compute node.
job={job_dir}
sock={sock}
umask 077
{record_fn}
{now_fn}
trap : INT
trap : TERM
printf '%s\n' "$SLURM_JOB_NODELIST" > "$job/{node_list}"
mkdir -p "${{sock%/*}}"
{tmux} -D </dev/null >/dev/null 2>&1 &
server=$!
n=0
until [ -S "$sock" ] || [ $n -ge 1000 ]; do sleep 0.01; n=$((n + 1)); done
{tmux} new-session -d -s {session} -x {cols} -y {rows} -c {workdir} sh {run_sh} \\; \\
        pipe-pane -t {session} {capture} \\; set-option -t {session} status-left {status_left} \\; \\
        set-option -s exit-empty on || {{
    echo "p: tmux could not start the job on $(hostname)" >> "$job/{output}"
    kill $server 2>/dev/null
}}
while kill -0 $server 2>/dev/null; do wait $server; done
if [ ! -s "$job/{exitcode}" ]; then
    case $(squeue -h -j "$SLURM_JOB_ID" -o %r 2>/dev/null) in
        TimeLimit) how=TIMEOUT ;;
        *) how=CANCELLED ;;
    esac
    [ -s "$job/{engine_end}" ] || echo "$how" > "$job/{engine_end}"
    end=$(now)
    record {ended_at} "$end"
    record {log_end} "$(wc -c < "$job/{output}")"
    printf '{{"t":%s,"event":"ended","id":"{job_id}","exit_code":143}}\n' "$end" >> {events_log}
    record {exitcode} 143
fi
code=1
read -r code < "$job/{exitcode}"
exit "$code"
"""

# Run on the login node by the client's `ssh -t`: waits for a queued job to
# start, then reaches its tmux through `srun --overlap`; where the cluster
# refuses that, it follows the job's output instead, and says why.
ATTACH_SH = """\
job={job_dir}
said=
until [ -s "$job/{pgid}" ]; do
    [ ! -s "$job/{exitcode}" ] || exit 1
    [ -n "$said" ] || echo "p: the job waits in Slurm's queue; attaching once it starts (Ctrl+C leaves it queued)"
    said=1
    sleep 0.5
done
slurm_job=$(cat "$job/{engine_id}")
if ! why=$(srun --jobid="$slurm_job" --overlap --quiet true 2>&1); then
    echo "p: cannot reach the job's terminal (srun --overlap: $(echo "$why" | tail -n 1)); following its output"
    tail -c +1 -f "$job/{output}" &
    follower=$!
    until [ -s "$job/{exitcode}" ]; do sleep 0.5; done
    sleep 0.5
    kill $follower
    exit 0
fi
exec srun --jobid="$slurm_job" --overlap --quiet --pty tmux -S {sock} attach-session -t {session}
"""
