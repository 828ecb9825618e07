"""Job operations on the worker: start, inspect, stop, remove.

The job directory (``~/.p/jobs/<id>/``) is the truth; the agent keeps no job
state in memory, so a restarted or upgraded agent sees every job as it is.
The engine (executor.py) runs the jobs; everything here is the same for any.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Container

from p_protocol import JOB_ID_RE, ProtocolError
from p_protocol.jobspec import JobSpec, env_script
from p_protocol.layout import END_FILE_SIZE, JobFile, Layout
from p_protocol.states import State

from . import events, rusage, scratch
from .executor import Executor, JobStart
from .files import ASK_ENGINE_EVERY, create_file, fill_in, parse_float, poll_intervals, read_file, rmtree, write_file
from .queue import Queue, QueueRefused
from .spares import Spares, copy_tree

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

# After the client that prepared a workdir left without starting its job,
# how long the worker's rsync gets to notice (its ssh channel closes with the
# client) before the half-synced workdir is removed.
SYNC_GRACE = 10.0
# A workdir no job owns, untouched this long, is left over (its client or
# agent died); younger ones may be filling for another version's agent.
ORPHAN_AGE = 3600.0
# The exit status recorded for a job `p reject` ended: not allowed to run
# (as a shell says of a command it found but cannot execute).
REJECTED_EXIT = 126


class Jobs:
    def __init__(self, layout: Layout, executor: Executor) -> None:
        self.layout = layout
        self.executor = executor
        self.spares = Spares(layout, rmtree)
        # A job being started has a directory and no session yet: `clean`
        # must not take it for a lost one.
        self.starting = threading.Lock()
        # Jobs whose workdir a client is syncing into (between prepare and
        # start), with the connection that asked: `clean` must leave that
        # workdir alone, and it goes if the client leaves without a start.
        self.syncing: dict[str, object] = {}
        # An engine that schedules resources itself (Slurm) gives its jobs
        # their GPUs; the queue only counts them for the others.
        self.queue = Queue(layout, self._launch, self._ended_ids, self._start_failed,
                           keeps_gpus=executor.name != "slurm")

    def prepare(self, job_id: str, spare_key: str | None, connection: object = None,
                source: str | None = None) -> tuple[bool, str | None]:
        """The job's workdir, ready for the client's sync: the spare copy of
        its directory when there is one (see spares.py), and the job whose
        sync it is an exact copy of, if known; with ``source``, a copy of
        that job's workdir instead, which no sync follows."""
        workdir = self.layout.workdir(job_id)
        with self.starting:
            if source is not None and (os.path.lexists(workdir) or os.path.exists(self.layout.job_dir(job_id))):
                raise ProtocolError(f"job {job_id} exists already")  # cp would copy into it
            self.syncing[job_id] = connection
            if source is None and spare_key is None:
                os.makedirs(workdir, mode=0o700, exist_ok=True)
                return False, None
        # Outside the lock: a big tree checked or copied must not hold up
        # other jobs' starts. Until its start, the workdir is a sync like any
        # (`clean` leaves it, a client that leaves takes it along).
        if source is None:
            assert spare_key is not None
            return self.spares.take(spare_key, workdir)
        if not os.path.isdir(self.layout.workdir(source)):
            raise ProtocolError(f"job {source[:8]}'s workdir is gone from this worker")
        if not copy_tree(self.layout.workdir(source), workdir):
            rmtree(workdir)
            raise ProtocolError(f"could not copy job {source[:8]}'s workdir (is the disk full?)")
        return True, None

    def abandon(self, connection: object) -> None:
        """``connection`` closed: the workdirs it prepared and started no job
        in are half-synced (the client died or lost its link). They go once
        the worker's rsync has had SYNC_GRACE to notice its client is gone."""
        with self.starting:
            left = [job_id for job_id, owner in self.syncing.items() if owner == connection]
            for job_id in left:
                del self.syncing[job_id]
        if left:
            timer = threading.Timer(SYNC_GRACE, self._remove_unowned, (left,))
            timer.daemon = True
            timer.start()

    def _remove_unowned(self, job_ids: list[str]) -> None:
        with self.starting:
            for job_id in job_ids:
                if job_id not in self.syncing and not os.path.exists(self.layout.job_dir(job_id)):
                    rmtree(self.layout.workdir(job_id))

    def sweep(self, now: float | None = None) -> None:
        """What a client or an agent that died left behind, untouched for
        ORPHAN_AGE: workdirs no job owns and no sync here fills (another
        version's agent may be syncing into a fresh one), copies of spares
        no copy here is making. ``now``: the time to judge by (tests)."""
        cutoff = (time.time() if now is None else now) - ORPHAN_AGE
        with self.starting:
            orphans = [job_id for job_id in _job_ids(self.layout.workdirs_dir)
                       if job_id not in self.syncing and not os.path.exists(self.layout.job_dir(job_id))]
        for job_id in orphans:
            if _last_change(self.layout.workdir(job_id)) < cutoff:
                self._remove_unowned([job_id])
        self.spares.sweep(cutoff)

    def ensure_layout(self) -> None:
        for path in (self.layout.root, self.layout.bin_dir, self.layout.jobs_dir, self.layout.workdirs_dir,
                     self.layout.run_dir, self.layout.tmp_dir, self.layout.spares_dir):
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except FileExistsError:
                pass  # a symlink to scratch space that is not mounted now: `prepare` says so
        os.chmod(self.layout.run_dir, 0o700)
        self.executor.setup()

    def scratch(self, path: str | None) -> tuple[str, int]:
        """Where workdirs and spares live, and the free bytes there; with
        ``path``, move them there first (see scratch.py)."""
        if path is not None:
            with self.starting:
                alive = self.executor.alive()
                running = [job_id for job_id in _job_ids(self.layout.jobs_dir)
                           if (job := self.view(job_id, alive)) is not None and _active(job)]
                if running or self.syncing:
                    raise ProtocolError(f"{len(running) + len(self.syncing)} job(s) run, wait or are being "
                                        "synced there; set the scratch space once they have ended")
                with self.spares.lock:
                    if self.spares.copying:
                        raise ProtocolError("a spare copy is being made; retry in a minute")
                    scratch.place(self.layout, path)
        return scratch.where(self.layout)

    # -- start -------------------------------------------------------------

    def start(self, job_id: str, spec: JobSpec, cwd: str, worker: str, cols: int, rows: int, *,
              tty: bool, expect_client: bool, secrets: dict[str, str] | None = None,
              notify_command: str | None = None) -> dict[str, Any]:
        """Take the job as ``spec`` says into the worker's queue, which starts
        it in a session of its own now or once there is room (queue.py).
        ``tty``: the job gets the session's terminal (else no terminal at
        all, as `ssh host cmd` off one); ``expect_client``: a client is on
        its way to attach, so the "Job done" screen waits for it even if the
        job ends first; ``secrets``: the values of the spec's secrets
        (jobspec.py), kept in a 0600 file while it waits; ``notify_command``:
        run by the job's script when it ends (the client's
        `notify.worker_command`)."""
        secrets = secrets or {}
        if sorted(secrets) != sorted(spec.secrets):
            raise ProtocolError("the secrets' values do not match the names the job spec gives")
        _refuse_unsupported(spec, self.executor.name)
        command = spec.command
        with self.starting:
            self.syncing.pop(job_id, None)
            job_dir = self.layout.job_dir(job_id)
            workdir = self.layout.workdir(job_id)
            if os.path.exists(job_dir):
                raise ProtocolError(f"job {job_id} exists already")
            os.makedirs(job_dir, mode=0o700)
            events.append(self.layout, "submitted", job_id)
            # `p -n` syncs nothing: the job still gets its own (empty) workdir.
            os.makedirs(workdir, mode=0o700, exist_ok=True)
            launch = {"cols": cols, "rows": rows, "tty": tty, "expect_client": expect_client}
            for name, text in ((JobFile.COMMAND, command), (JobFile.SPEC, json.dumps(spec.to_json())),
                               (JobFile.CWD, cwd), (JobFile.WORKER, worker), (JobFile.LAUNCH, json.dumps(launch)),
                               (JobFile.OUTPUT, "")):
                create_file(os.path.join(job_dir, name), text)
            os.mkdir(os.path.join(job_dir, JobFile.PENDING), mode=0o700)
            for name in JobFile.END_FILES:
                create_file(os.path.join(job_dir, JobFile.PENDING, name), " " * (END_FILE_SIZE - 1) + "\n")
            # Files, not argv or tmux's environment: only this user can read
            # them (0600 in a 0700 directory), and no `ps` shows them.
            if secrets:
                create_file(os.path.join(job_dir, JobFile.SECRETS), env_script(secrets))
            if notify_command:
                create_file(os.path.join(job_dir, JobFile.NOTIFY), notify_command + "\n")
            try:
                self.queue.submit(job_id, spec.gpus, worker)
            except QueueRefused as exc:
                rmtree(job_dir)
                raise ProtocolError(str(exc)) from None
        self.queue.schedule()
        failed = read_file(os.path.join(job_dir, JobFile.START_FAILED))
        if failed is not None:
            # It was its turn and it could not start: as before there was a
            # queue, the client hears why, and nothing is left of it.
            rmtree(job_dir)
            raise ProtocolError(failed)
        # Just started (or waiting): the engine need not be asked whether it
        # holds the job, which costs a tmux process per start.
        view = self.view(job_id, alive={job_id})
        if view is not None and view.get("position") is not None:
            events.append(self.layout, view["state"], job_id, position=view["position"])
        return view  # type: ignore[return-value]

    def _launch(self, job_id: str, gpus: list[int]) -> None:
        """Start a job the queue let through, with ``gpus`` as its GPUs."""
        job_dir = self.layout.job_dir(job_id)
        try:
            with open(os.path.join(job_dir, JobFile.LAUNCH)) as src:
                launch = json.load(src)
            spec = JobSpec.parse(json.loads(read_file(os.path.join(job_dir, JobFile.SPEC)) or ""))
            cols, rows, tty, expect_client = (launch["cols"], launch["rows"], launch["tty"] is True,
                                              launch["expect_client"] is True)
            worker = (read_file(os.path.join(job_dir, JobFile.WORKER)) or "").strip()
        except (OSError, ValueError, KeyError, TypeError, ProtocolError) as exc:
            raise ProtocolError(f"the job's files are damaged ({exc})") from None
        env = dict(spec.env)
        if spec.gpus and self.queue.keeps_gpus:
            # What CUDA (and most GPU frameworks) read to pick their devices.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpus)
            write_file(os.path.join(job_dir, JobFile.GPUS), ",".join(str(gpu) for gpu in gpus))
        if env:
            write_file(os.path.join(job_dir, JobFile.ENV), env_script(env))
        write_file(os.path.join(job_dir, JobFile.STARTED_AT), f"{time.time():.3f}")
        # Logged before the engine starts it: a job that ends at once
        # logs its `ended` after this line, never before.
        events.append(self.layout, "started", job_id, **({"gpus": gpus} if spec.gpus else {}))
        try:
            self.executor.start(JobStart(job_id, job_dir, self.layout.workdir(job_id), spec.command, worker,
                                         int(cols), int(rows), tty, expect_client, spec))
        except BaseException as exc:
            _forget_secrets(job_dir)  # no job will read them
            events.append(self.layout, "failed", job_id, error=str(exc)[:400])
            raise

    def _start_failed(self, job_id: str, reason: str) -> None:
        job_dir = self.layout.job_dir(job_id)
        _forget_secrets(job_dir)
        try:
            write_file(os.path.join(job_dir, JobFile.START_FAILED), f"it could not start: {reason}")
        except OSError:
            pass  # removed meanwhile

    def _ended_ids(self, job_ids: list[str], ask_engine: bool) -> set[str]:
        """Which of the jobs holding slots have ended, or are gone."""
        alive = self.executor.alive() if ask_engine else None
        return {job_id for job_id in job_ids
                if self.finished(job_id) or not os.path.isdir(self.layout.job_dir(job_id))
                or alive is not None and job_id not in alive}

    def approve(self, job_id: str, approved: bool) -> dict[str, Any] | None:
        """Let a job pending approval take its turn, or end it unrun."""
        job = self.view(job_id)
        if job is None:
            return None
        if job["state"] != State.PENDING_APPROVAL.value:
            raise ProtocolError(f"the job is {job['state']}, not pending approval")
        if approved:
            events.append(self.layout, "approved", job_id)
            self.queue.approve(job_id)
        elif self.queue.withdraw(job_id):
            events.append(self.layout, "rejected", job_id)
            self._end_unrun(job_id, JobFile.REJECTED, REJECTED_EXIT)
        return self.view(job_id)

    def _end_unrun(self, job_id: str, mark: str, code: int) -> None:
        """Record the end of a job that left the queue without running."""
        job_dir = self.layout.job_dir(job_id)
        _forget_secrets(job_dir)
        write_file(os.path.join(job_dir, mark), "")
        fill_in(os.path.join(job_dir, JobFile.ENDED_AT), f"{time.time():.3f}")
        fill_in(os.path.join(job_dir, JobFile.LOG_END), "0")
        fill_in(os.path.join(job_dir, JobFile.EXIT_CODE), str(code))

    # -- inspect -----------------------------------------------------------

    def view(self, job_id: str, alive: Container[str] | None = None) -> dict[str, Any] | None:
        """The job as p_protocol.wire.JOB describes it; None if unknown here."""
        job_dir = self.layout.job_dir(job_id)
        if not os.path.isdir(job_dir):
            return None
        waiting = self.queue.state(job_id)
        alive = self.executor.alive() if alive is None else alive
        held = waiting is None and job_id in alive
        verdict = self.executor.verdict(job_id, alive)
        started_at = parse_float(read_file(os.path.join(job_dir, JobFile.STARTED_AT)))
        exit_code, ended_at = _exit_status(job_dir)
        if exit_code is not None:
            if os.path.exists(os.path.join(job_dir, JobFile.TIMED_OUT)):
                state = State.TIMEOUT  # its --timeout passed (run.sh's watchdog)
            elif os.path.exists(os.path.join(job_dir, JobFile.STOPPED)):
                state = State.STOPPED
            elif os.path.exists(os.path.join(job_dir, JobFile.REJECTED)):
                state = State.REJECTED
            else:
                state = State.DONE
            if state is State.DONE and verdict.state is not None and verdict.state.finished:
                state = verdict.state  # the engine ended it (a time limit, a failed node)
        elif waiting is not None:
            state, ended_at, started_at = waiting[0], None, None  # in the worker's queue
        elif verdict.state is State.QUEUED:
            state, ended_at = State.QUEUED, None  # in its engine's
        elif held:
            state, ended_at = State.RUNNING, None
        else:
            # No exit code and the engine holds nothing: it went away (worker
            # rebooted, session killed by hand) before the job's end was recorded.
            state, ended_at = State.LOST, None
        view = {"id": job_id, "state": state.value, "started_at": started_at, "ended_at": ended_at,
                "exit_code": exit_code, "attachable": held}
        if state in (State.QUEUED, State.LOST, State.TIMEOUT):
            view["reason"] = verdict.reason or (_why_lost(job_dir) if state is State.LOST else None)
        if verdict.engine_id is not None:
            view.update(engine_id=verdict.engine_id, node_list=verdict.node_list)
        if exit_code is not None:
            view["rusage"] = rusage.measured(job_dir, started_at, ended_at)
        if waiting is not None:
            view["position"] = waiting[1]
        gpus = read_file(os.path.join(job_dir, JobFile.GPUS))
        if gpus:
            view["gpu_ids"] = [int(gpu) for gpu in gpus.split(",") if gpu.strip().isdigit()]
        return view

    def views(self, job_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        alive = self.executor.alive()
        return {job_id: self.view(job_id, alive) for job_id in job_ids}

    def finished(self, job_id: str) -> bool:
        return _exit_status(self.layout.job_dir(job_id))[0] is not None

    def has_ended(self, job_id: str, *, ask_engine: bool) -> bool:
        """Finished, by its files; with ``ask_engine``, also lost (the engine
        holds it no more), which may cost a process: pollers ask now and then."""
        if self.finished(job_id):
            return True
        if not ask_engine:
            return False
        job = self.view(job_id)
        return job is None or not _active(job)

    def wait(self, job_id: str, timeout: float | None = None, start: bool = False) -> dict[str, Any] | None:
        """Block until the job has an exit code or is lost, or for at most
        ``timeout`` seconds; the job as it is then. With ``start``, only
        until it has left the worker's queue (started, or ended unrun)."""
        give_up = None if timeout is None else time.monotonic() + timeout
        for count, delay in enumerate(poll_intervals()):
            if start and self.queue.state(job_id) is None:
                return self.view(job_id)
            if self.has_ended(job_id, ask_engine=count % ASK_ENGINE_EVERY == 0):
                return self.view(job_id)
            if give_up is not None and time.monotonic() >= give_up:
                return self.view(job_id)
            time.sleep(delay)
        raise AssertionError("unreachable")

    # -- control -----------------------------------------------------------

    def stop(self, job_id: str, grace: float) -> dict[str, Any] | None:
        if self.queue.withdraw(job_id):
            # It never ran: recorded as a stop that killed it at once.
            events.append(self.layout, "stopped", job_id, queued=True)
            self._end_unrun(job_id, JobFile.STOPPED, 128 + signal.SIGTERM)
            return self.view(job_id)
        job = self.view(job_id)
        if job is None or not _active(job):
            return job
        job_dir = self.layout.job_dir(job_id)
        mark = os.path.join(job_dir, JobFile.STOPPED)
        write_file(mark, "")
        if self.finished(job_id):
            os.unlink(mark)  # it ended by itself just now: not stopped
            return self.view(job_id)
        events.append(self.layout, "stopped", job_id, grace=grace)
        for signum, wait_for in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            self.executor.signal(job_id, signum)
            if self.wait_finished(job_id, wait_for):
                break
        if not self.finished(job_id):
            # Never started, or its script is gone: record the stop ourselves.
            events.append(self.layout, "ended", job_id, exit_code=128 + signal.SIGTERM)
            fill_in(os.path.join(job_dir, JobFile.EXIT_CODE), f"{128 + signal.SIGTERM}")
        _forget_secrets(job_dir)  # killed before it read them, or its script was
        self.executor.close(job_id)
        return self.view(job_id)

    def interrupt(self, job_id: str) -> None:
        """What Ctrl+C does in an attached terminal, for a client that streams."""
        if not self.finished(job_id):
            self.executor.signal(job_id, signal.SIGINT)

    def attach_argv(self, job_id: str, ctrl_c_detaches: bool = False) -> list[str] | None:
        if not os.path.isdir(self.layout.job_dir(job_id)):
            raise ProtocolError("no such job on this worker")
        return self.executor.attach_argv(job_id, ctrl_c_detaches)

    def wait_finished(self, job_id: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        for delay in poll_intervals():
            if self.finished(job_id) or time.monotonic() >= deadline:
                break
            time.sleep(delay)
        return self.finished(job_id)

    def remove(self, job_id: str, force: bool, spare_key: str | None = None) -> None:
        """The job's session, directory and workdir; with ``spare_key``, also
        that directory's spare copy (its last job is gone)."""
        self.queue.withdraw(job_id)  # it never ran: nothing to stop
        job = self.view(job_id)
        if job is not None and _active(job):
            if not force:
                raise ProtocolError("the job is running; stop it first or force")
            self.stop(job_id, grace=2.0)
        self.executor.close(job_id)
        self.syncing.pop(job_id, None)
        existed = os.path.isdir(self.layout.job_dir(job_id))
        for path in (self.layout.workdir(job_id), self.layout.job_dir(job_id)):
            rmtree(path)
        if existed:
            events.append(self.layout, "removed", job_id)
        if spare_key is not None:
            self.spares.drop(spare_key)

    def clean(self) -> dict[str, Any]:
        """Everything but running jobs: finished job dirs, workdirs without a
        running job, every spare copy."""
        running = set()
        removed = []
        with self.starting:
            alive = self.executor.alive()
            for job_id in _job_ids(self.layout.jobs_dir):
                job = self.view(job_id, alive)
                if job is not None and _active(job):
                    running.add(job_id)
                else:
                    self.executor.close(job_id)  # a "Job done" screen, if any
                    rmtree(self.layout.job_dir(job_id))
                    events.append(self.layout, "removed", job_id)
                    removed.append(job_id)
            busy = running | set(self.syncing)
        workdirs = [job_id for job_id in _job_ids(self.layout.workdirs_dir) if job_id not in busy]
        for job_id in workdirs:
            rmtree(self.layout.workdir(job_id))
        return {"jobs": removed, "workdirs": len(workdirs), "spares": self.spares.drop()}

    def resolve(self, job_id: str, path: str) -> tuple[str, bool]:
        """A path inside the job's workdir, symlinks resolved; refuse escapes."""
        workdir = os.path.realpath(self.layout.workdir(job_id))
        if not os.path.isdir(workdir):
            raise ProtocolError("the job's workdir is gone")
        if os.path.isabs(path) or "\0" in path:
            raise ProtocolError("the path must be relative to the job's workdir")
        target = os.path.realpath(os.path.join(workdir, path))
        if target != workdir and os.path.commonpath([workdir, target]) != workdir:
            raise ProtocolError(f"{path!r} leads outside the job's workdir")
        if not os.path.exists(target):
            raise ProtocolError(f"{path!r} does not exist in the job's workdir")
        return target, os.path.isdir(target)

    def existing_workdirs(self, job_ids: list[str]) -> list[str]:
        return [job_id for job_id in job_ids if os.path.isdir(self.layout.workdir(job_id))]

    def log_path(self, job_id: str) -> str:
        return os.path.join(self.layout.job_dir(job_id), JobFile.OUTPUT)

    def log_end(self, job_id: str) -> int | None:
        """Where the job's own output ends in output.log, once it has ended."""
        text = read_file(os.path.join(self.layout.job_dir(job_id), JobFile.LOG_END))
        try:
            return int(text.strip()) if text else None
        except ValueError:
            return None


def _exit_status(job_dir: str) -> tuple[int | None, float | None]:
    """(exit code, end time) once run.sh has written them, else (None, None)."""
    path = os.path.join(job_dir, JobFile.EXIT_CODE)
    try:
        with open(path) as src:
            code = int(src.read().strip())
    except (OSError, ValueError):
        return None, None  # absent, or caught between creation and write
    ended = read_file(os.path.join(job_dir, JobFile.ENDED_AT)) or ""
    try:
        return code, float(ended.strip().replace("%N", "0"))
    except ValueError:
        pass
    try:
        return code, os.stat(path).st_mtime
    except OSError:
        return code, None


# What the run form may ask that an engine does not yet honour: refused
# with the flag's name, never silently ignored.
_NOT_YET = {"max_output": "--max-output"}
_SLURM_ONLY = {"cpus": "--cpus", "mem": "--mem", "nodes": "--nodes", "sbatch_args": "--sbatch-arg"}


# What each engine honours of those: tmux the output cap (its pane's
# capture, scripts.py); Slurm (slurm.py) sbatch's --gpus.
_HONOURS = {"tmux": {"max_output"}, "slurm": {"gpus"}}


def _refuse_unsupported(spec: JobSpec, engine: str) -> None:
    for name, flag in _NOT_YET.items():
        if getattr(spec, name) and name not in _HONOURS.get(engine, set()):
            raise ProtocolError(f"this worker's agent cannot honour {flag} yet")
    for name, flag in _SLURM_ONLY.items():
        if getattr(spec, name) and engine != "slurm":
            raise ProtocolError(f"{flag} applies to Slurm workers only; this worker runs jobs with {engine}")


def _active(job: dict[str, Any]) -> bool:
    """Queued or running: its end is still to come."""
    return not State(job["state"]).finished


def _forget_secrets(job_dir: str) -> None:
    try:
        os.unlink(os.path.join(job_dir, JobFile.SECRETS))
    except FileNotFoundError:
        pass


def _why_lost(job_dir: str) -> str | None:
    """What kept a lost job's end from being recorded, when its script saw
    it: a full disk (its reserved space was no use, e.g. on a copy-on-write
    filesystem). A cause is named only when it was observed."""
    failed = read_file(os.path.join(job_dir, JobFile.START_FAILED))
    if failed is not None:
        return failed.strip()
    if not os.path.exists(os.path.join(job_dir, JobFile.END_FAILED)):
        return None
    worker = (read_file(os.path.join(job_dir, JobFile.WORKER)) or "").strip() or "the worker"
    return f"disk full on {worker}: its end could not be recorded"


def _last_change(directory: str) -> float:
    """The newest ctime of ``directory`` and the directories in it: a file
    rsync creates or renames into place changes its directory's. Not the
    mtime, which rsync -a and cp -a set back to the source's."""
    newest = 0.0
    for path, _dirs, _files in os.walk(directory):
        try:
            newest = max(newest, os.stat(path).st_ctime)
        except OSError:
            pass
    return newest


def _job_ids(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [name for name in names if JOB_ID_RE.match(name)]

