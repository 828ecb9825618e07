"""Job operations on the worker: start, inspect, stop, remove.

The job directory (``~/.p/jobs/<id>/``) is the truth; the agent keeps no job
state in memory, so a restarted or upgraded agent sees every job as it is.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Iterator
from shlex import quote
from typing import Any

from p_protocol import (
    JOB_ID_RE,
    STOPPED_MARK,
    WORKER_NAME_RE,
    Layout,
    ProtocolError,
    State,
    job_view,
    session_name,
)

from . import scripts
from .spares import Spares
from .tmux import Tmux, escape_format

COMMAND_IN_STATUS = 40
# Waiters poll job files: quick at first, so a short job's end is seen within
# milliseconds, slower for long jobs.
POLL_FIRST = 0.01
POLL_MAX = 0.25
# Of those polls, one in this many also asks tmux whether the session is gone.
ASK_TMUX_EVERY = 8


def poll_intervals() -> Iterator[float]:
    delay = POLL_FIRST
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


def read_file(path: str) -> str | None:
    try:
        with open(path) as src:
            return src.read()
    except FileNotFoundError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


class Jobs:
    def __init__(self, layout: Layout, tmux: Tmux) -> None:
        self.layout = layout
        self.tmux = tmux
        self.spares = Spares(layout, _rmtree)
        # A job being started has a directory and no session yet: `clean`
        # must not take it for a lost one.
        self.starting = threading.Lock()

    def ensure_layout(self) -> None:
        for path in (self.layout.root, self.layout.bin_dir, self.layout.jobs_dir, self.layout.workdirs_dir,
                     self.layout.run_dir, self.layout.tmp_dir, self.layout.spares_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(self.layout.run_dir, 0o700)
        self.tmux.write_conf()

    # -- start -------------------------------------------------------------

    def start(self, job_id: str, command: str, cwd: str, worker: str, cols: int, rows: int, *,
              tty: bool, expect_client: bool) -> dict[str, Any]:
        """Start the job in a session of its own. ``tty``: the job gets the
        session's terminal (else no terminal at all, as `ssh host cmd` off
        one); ``expect_client``: a client is on its way to attach, so the
        "Job done" screen waits for it even if the job ends first."""
        with self.starting:
            job_dir = self.layout.job_dir(job_id)
            workdir = self.layout.workdir(job_id)
            if os.path.exists(job_dir):
                raise ProtocolError(f"job {job_id} exists already")
            if not WORKER_NAME_RE.match(worker):
                raise ProtocolError(f"malformed worker name {worker!r}")
            os.makedirs(job_dir, mode=0o700)
            # `p -n` syncs nothing: the job still gets its own (empty) workdir.
            os.makedirs(workdir, mode=0o700, exist_ok=True)
            session = session_name(job_id)
            started_at = time.time()
            write_file(os.path.join(job_dir, "cmd"), command)
            write_file(os.path.join(job_dir, "cwd"), cwd)
            write_file(os.path.join(job_dir, "worker"), worker)
            write_file(os.path.join(job_dir, "started_at"), f"{started_at:.3f}")
            write_file(os.path.join(job_dir, "tmux_session"), session)
            write_file(os.path.join(job_dir, "output.log"), "")
            write_file(os.path.join(job_dir, "run.sh"),
                       scripts.run_sh(job_id, job_dir, workdir, self.layout.tmux_socket, tty=tty,
                                      expect_client=expect_client))
            write_file(os.path.join(job_dir, "status.sh"), scripts.status_sh(job_dir))
            shown = command if len(command) <= COMMAND_IN_STATUS else command[: COMMAND_IN_STATUS - 1] + "…"
            shown = " ".join(shown.split())
            status_cmd = "sh " + quote(os.path.join(job_dir, "status.sh"))
            status_left = f"{session} {worker} {escape_format(shown)} #({escape_format(status_cmd)}) "
            self.tmux.new_session(session, max(cols, 20), max(rows, 5), workdir,
                                  ["sh", os.path.join(job_dir, "run.sh")], status_left,
                                  "exec cat >> " + quote(os.path.join(job_dir, "output.log")))
            return self.view(job_id, {session})  # type: ignore[return-value]

    # -- inspect -----------------------------------------------------------

    def view(self, job_id: str, sessions: set[str] | None = None) -> dict[str, Any] | None:
        job_dir = self.layout.job_dir(job_id)
        if not os.path.isdir(job_dir):
            return None
        if sessions is None:
            sessions = self.tmux.sessions()
        session_open = session_name(job_id) in sessions
        started_at = _float(read_file(os.path.join(job_dir, "started_at")))
        exit_code, ended_at = _exit_status(job_dir)
        if exit_code is not None:
            stopped = os.path.exists(os.path.join(job_dir, STOPPED_MARK))
            state = State.STOPPED if stopped else State.DONE
        elif session_open:
            state, ended_at = State.RUNNING, None
        else:
            # No exit code and no session: the tmux server went away (worker
            # rebooted, session killed by hand) before run.sh could record one.
            state, ended_at = State.LOST, None
        return job_view(job_id, state=state, started_at=started_at, ended_at=ended_at,
                        exit_code=exit_code, session_open=session_open)

    def views(self, job_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        sessions = self.tmux.sessions()
        return {job_id: self.view(job_id, sessions) for job_id in job_ids}

    def finished(self, job_id: str) -> bool:
        return _exit_status(self.layout.job_dir(job_id))[0] is not None

    def has_ended(self, job_id: str, *, ask_tmux: bool) -> bool:
        """Finished, by its files; with ``ask_tmux``, also lost (no session
        left), which costs a tmux process: pollers ask only now and then."""
        if self.finished(job_id):
            return True
        if not ask_tmux:
            return False
        job = self.view(job_id)
        return job is None or job["state"] != State.RUNNING.value

    def wait(self, job_id: str) -> dict[str, Any] | None:
        """Block until the job has an exit code or is lost."""
        for count, delay in enumerate(poll_intervals()):
            if self.has_ended(job_id, ask_tmux=count % ASK_TMUX_EVERY == 0):
                return self.view(job_id)
            time.sleep(delay)
        raise AssertionError("unreachable")

    # -- control -----------------------------------------------------------

    def stop(self, job_id: str, grace: float) -> dict[str, Any] | None:
        job = self.view(job_id)
        if job is None or job["state"] != State.RUNNING.value:
            return job
        job_dir = self.layout.job_dir(job_id)
        mark = os.path.join(job_dir, STOPPED_MARK)
        write_file(mark, "")
        if self.finished(job_id):
            os.unlink(mark)  # it ended by itself just now: not stopped
            return self.view(job_id)
        pgid = _pgid(job_dir)
        for delay in poll_intervals():
            # A job stopped the instant it starts may not have written it yet.
            if pgid is not None or delay >= POLL_MAX:
                break
            time.sleep(delay)
            pgid = _pgid(job_dir)
        if pgid is not None:
            for sig, wait_for in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
                if self._wait_finished(job_id, wait_for):
                    break
        if not self.finished(job_id):
            # Never started, or its run.sh is gone: record the stop ourselves.
            write_file(os.path.join(job_dir, "exitcode"), f"{128 + signal.SIGTERM}\n")
        self.tmux.kill_session(session_name(job_id))
        return self.view(job_id)

    def interrupt(self, job_id: str) -> None:
        """What Ctrl+C does in an attached terminal, for a client that streams."""
        pgid = _pgid(self.layout.job_dir(job_id))
        if pgid is not None and not self.finished(job_id):
            try:
                os.killpg(pgid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def _wait_finished(self, job_id: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        for delay in poll_intervals():
            if self.finished(job_id) or time.monotonic() >= deadline:
                break
            time.sleep(delay)
        return self.finished(job_id)

    def remove(self, job_id: str, force: bool, spare_key: str | None = None) -> None:
        """The job's session, directory and workdir; with ``spare_key``, also
        that directory's spare copy (its last job is gone)."""
        job = self.view(job_id)
        if job is not None and job["state"] == State.RUNNING.value:
            if not force:
                raise ProtocolError("the job is running; stop it first or force")
            self.stop(job_id, grace=2.0)
        self.tmux.kill_session(session_name(job_id))
        for path in (self.layout.workdir(job_id), self.layout.job_dir(job_id)):
            _rmtree(path)
        if spare_key is not None:
            self.spares.drop(spare_key)

    def clean(self) -> dict[str, Any]:
        """Everything but running jobs: finished job dirs, workdirs without a
        running job, every spare copy."""
        running = set()
        removed = []
        with self.starting:
            sessions = self.tmux.sessions()
            for job_id in _job_ids(self.layout.jobs_dir):
                job = self.view(job_id, sessions)
                if job is not None and job["state"] == State.RUNNING.value:
                    running.add(job_id)
                else:
                    self.tmux.kill_session(session_name(job_id))  # a "Job done" screen, if any
                    _rmtree(self.layout.job_dir(job_id))
                    removed.append(job_id)
        workdirs = [job_id for job_id in _job_ids(self.layout.workdirs_dir) if job_id not in running]
        for job_id in workdirs:
            _rmtree(self.layout.workdir(job_id))
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
        return os.path.join(self.layout.job_dir(job_id), "output.log")

    def log_end(self, job_id: str) -> int | None:
        """Where the job's own output ends in output.log, once it has ended."""
        text = read_file(os.path.join(self.layout.job_dir(job_id), scripts.LOG_END))
        try:
            return int(text.strip()) if text else None
        except ValueError:
            return None


def _exit_status(job_dir: str) -> tuple[int | None, float | None]:
    """(exit code, end time) once run.sh has written them, else (None, None)."""
    path = os.path.join(job_dir, "exitcode")
    try:
        with open(path) as src:
            code = int(src.read().strip())
    except (OSError, ValueError):
        return None, None  # absent, or caught between creation and write
    ended = read_file(os.path.join(job_dir, scripts.ENDED_AT)) or ""
    try:
        return code, float(ended.strip().replace("%N", "0"))
    except ValueError:
        pass
    try:
        return code, os.stat(path).st_mtime
    except OSError:
        return code, None


def _pgid(job_dir: str) -> int | None:
    text = read_file(os.path.join(job_dir, scripts.PGID))
    try:
        pgid = int(text.strip()) if text else None
    except ValueError:
        return None
    # Never signal our own group or init's, whatever the file says.
    return pgid if pgid and pgid > 1 and pgid != os.getpgid(0) else None


def _job_ids(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [name for name in names if JOB_ID_RE.match(name)]


def _rmtree(path: str) -> None:
    def make_writable(func: Any, target: str, _exc: Any) -> None:
        # Build trees often hold read-only directories (Go's module cache...).
        os.chmod(os.path.dirname(target), stat.S_IRWXU)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, stat.S_IRWXU)
        func(target)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=make_writable)
