"""The tmux engine: each job in a session of the agent's private tmux server
(its own socket and config, never the user's), under a generated run.sh
(scripts.py) that records the job's end in its files."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Container
from shlex import quote

from p_protocol import SHORT_ID_LEN, checked_job_id
from p_protocol.layout import JobFile, Layout

from . import scripts
from .executor import EngineError, JobStart, Verdict
from .files import is_jobs_group, poll_intervals, read_pgid, write_file
from .rusage import PeakSampler

COMMAND_IN_STATUS = 40
# How long a signal waits for a job started that instant to write its pgid.
PGID_WAIT = 1.0

# Why these options: the session must close when run.sh ends (it shows its own
# "Job done" screen first), the status bar must tick every second for the
# elapsed time, and a long build's output should stay scrollable.
# The server outlives its last session (`exit-empty off`): starting one
# costs each job a fork, the config and a utmp helper (~30 ms), and a
# client that reached an exiting server had to retry. The agent ends it
# when it leaves, idle (`retire`).
TMUX_CONF = """\
set -s exit-empty off
set -g status-interval 1
set -g remain-on-exit off
set -g history-limit 50000
set -g status-left-length 160
set -g status-right ""
set -g status-style "bg=colour24,fg=colour255"
set -g window-status-format ""
set -g window-status-current-format ""
set -g set-titles on
set -g set-titles-string "#{session_name}"
set -g escape-time 10
"""


# Ctrl+C-detach mode: a key table of its own, and what the status bar says.
DETACH_TABLE = "p-ctrl-c-detaches"
CTRL_C_DETACHES = "Ctrl+C detaches "
CTRL_C_INTERRUPTS = "Ctrl+C interrupts "

NO_VERDICT = Verdict(None)
# How often a new session is tried when the server it reached was exiting.
SERVER_RACES = 3


class TmuxError(EngineError):
    pass


class Tmux:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def base(self) -> list[str]:
        return ["tmux", "-S", self.layout.tmux_socket, "-f", self.layout.tmux_conf]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                [*self.base(), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except FileNotFoundError:
            raise TmuxError("tmux is not installed on this worker") from None
        except subprocess.SubprocessError as exc:
            raise TmuxError(f"tmux {args[0]} failed: {exc}") from None
        if check and result.returncode != 0:
            raise TmuxError(f"tmux {args[0]} failed: {result.stderr.strip()}")
        return result

    def write_conf(self) -> None:
        write_file(self.layout.tmux_conf, TMUX_CONF)

    def sessions(self) -> set[str]:
        """Names of open sessions; none when the server is not running."""
        result = self.run("list-sessions", "-F", "#{session_name}", check=False)
        if result.returncode != 0:
            return set()
        return set(result.stdout.split())

    def new_session(self, name: str, cols: int, rows: int, cwd: str, argv: list[str],
                    status_left: str, capture: str) -> None:
        """Start ``argv`` in a new session whose output goes to ``capture``.

        One tmux call chains the commands (`;`): the server runs a client's
        whole command list before it next reads any pane, so the pipe is in
        place before the job's first byte, and the job starts sooner.
        """
        target = name  # just created: an exact name
        for attempt in range(SERVER_RACES):
            try:
                self.run("new-session", "-d", "-s", name, "-x", str(cols), "-y", str(rows), "-c", cwd, *argv,
                         ";", "pipe-pane", "-t", target, capture,
                         ";", "set-option", "-t", target, "status-left", status_left)
                return
            except TmuxError as exc:
                # The server exits with its last session: a client that
                # reached it just then loses it, and the next one starts a
                # new server (many short jobs at once make this happen).
                if "server exited unexpectedly" not in str(exc) or attempt == SERVER_RACES - 1:
                    raise
                time.sleep(0.05)

    def kill_session(self, name: str) -> None:
        self.run("kill-session", "-t", "=" + name, check=False)


def session_name(job_id: str) -> str:
    return "p-" + checked_job_id(job_id)[:SHORT_ID_LEN]


class _Sessions:
    """The jobs whose session is open, and those that run on without one: a
    job started off a terminal is in a process session of its own, so when
    its tmux session goes (the server killed) no hangup reaches it. It is
    held while its process group lives, so that `p stop` can still end it.

    A session is open while its one process, the job's script, runs: that
    is asked of /proc. Only when /proc cannot tell (a script that has not
    yet said its pid) is tmux asked, with one `list-sessions` for all (a
    process)."""

    def __init__(self, tmux: Tmux, layout: Layout) -> None:
        self.tmux = tmux
        self.layout = layout
        self._names: set[str] | None = None

    @property
    def names(self) -> set[str]:
        if self._names is None:
            self._names = self.tmux.sessions()
        return self._names

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, str):
            return False
        job_dir = self.layout.job_dir(job_id)
        script = _script_runs(job_dir)
        if script or script is None and session_name(job_id) in self.names:
            return True
        if os.path.exists(os.path.join(job_dir, JobFile.EXIT_CODE)):
            return False
        pgid = read_pgid(job_dir)
        return pgid is not None and is_jobs_group(pgid, job_dir)

    def __bool__(self) -> bool:
        return bool(self.names)


def _script_runs(job_dir: str) -> bool | None:
    """Whether the job's script still runs; None when /proc cannot tell
    (no pid said yet, or its pid runs something else now), for tmux to say."""
    try:
        with open(os.path.join(job_dir, JobFile.SCRIPT_PID)) as src:
            pid = int(src.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as src:
            argv = src.read().split(b"\0")
    except OSError:
        return False  # gone
    # `sh <script>`, though not always at argv[1]: under an emulator
    # (qemu-user's binfmt) the interpreter and the binary's path come first.
    return True if os.fsencode(os.path.join(job_dir, JobFile.SCRIPT)) in argv[1:] else None


class TmuxExecutor:
    name = "tmux"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.tmux = Tmux(layout)
        self.sampling = 0  # the pid whose sampler runs
        self.sampling_lock = threading.Lock()

    def setup(self) -> None:
        self.tmux.write_conf()

    def _watch_memory(self) -> None:
        """Jobs run on this host: their memory can be sampled (rusage.py).
        Started by the process that serves (a thread does not survive the
        daemon's fork), at its first look at the jobs."""
        with self.sampling_lock:
            if self.sampling != os.getpid():
                self.sampling = os.getpid()
                PeakSampler(self.layout).start()

    def start(self, job: JobStart) -> None:
        self._watch_memory()
        session = session_name(job.job_id)
        path = os.path.join
        write_file(path(job.job_dir, "tmux_session"), session)
        write_file(path(job.job_dir, JobFile.SCRIPT),
                   scripts.run_sh(job.job_id, job.job_dir, job.workdir, job.command, self.layout.tmux_socket,
                                  self.layout.events_log, tty=job.tty,
                                  expect_client=job.expect_client, timeout=job.spec.timeout,
                                  capped=job.spec.max_output is not None, layout=self.layout))
        if not job.tty:
            os.mkfifo(path(job.job_dir, scripts.OUTPUT_FIFO), 0o600)
        awk_file = None
        if job.spec.max_output is not None:
            awk_file = path(job.job_dir, JobFile.CAPTURE)
            write_file(awk_file, scripts.CAPTURE_AWK)
        # tmux expands formats (#) and strftime (%) in the command it pipes to.
        capture = scripts.capture_command(path(job.job_dir, JobFile.OUTPUT), awk_file, job.job_id,
                                          job.spec.max_output)
        self.tmux.new_session(session, max(job.cols, 20), max(job.rows, 5), job.workdir,
                              ["sh", path(job.job_dir, JobFile.SCRIPT)], status_left(job, session),
                              escape_format(capture))

    def alive(self) -> _Sessions:
        self._watch_memory()
        return _Sessions(self.tmux, self.layout)

    def verdict(self, job_id: str, alive: Container[str]) -> Verdict:
        return NO_VERDICT  # a job here runs at once, and only its script ends it

    def signal(self, job_id: str, signum: int) -> None:
        job_dir = self.layout.job_dir(job_id)
        deadline = time.monotonic() + PGID_WAIT
        pgid = read_pgid(job_dir)
        for delay in poll_intervals():
            # A job signalled the instant it starts may not have written it yet.
            if pgid is not None or time.monotonic() >= deadline:
                break
            time.sleep(delay)
            pgid = read_pgid(job_dir)
        if pgid is not None and is_jobs_group(pgid, job_dir):
            try:
                os.killpg(pgid, signum)
            except ProcessLookupError:
                pass

    def attach_argv(self, job_id: str, ctrl_c_detaches: bool = False) -> list[str] | None:
        if job_id not in self.alive():
            return None
        # A session gone by the time the client runs this (the job ended
        # with nobody attached) exits 1 without tmux's complaint. The mode
        # is the attaching client's: its session's key table (keys not
        # bound there go to the pane, and the prefix works as ever) and
        # what its status bar says are set as it attaches (`=name:`: that
        # session exactly, as set-option's target).
        table, mode = (DETACH_TABLE, CTRL_C_DETACHES) if ctrl_c_detaches else ("root", CTRL_C_INTERRUPTS)
        script = ('tmux -S "$0" has-session -t "$1" 2>/dev/null || exit 1; '
                  'tmux -S "$0" bind-key -T "$2" C-c detach-client \\; set-option -t "$1:" key-table "$3" '
                  '\\; set-option -t "$1:" status-right "$4" >/dev/null 2>&1; '
                  'exec tmux -S "$0" attach-session -t "$1"')
        return ["sh", "-c", script, self.layout.tmux_socket, "=" + session_name(job_id), DETACH_TABLE, table,
                mode]

    def close(self, job_id: str) -> None:
        self.tmux.kill_session(session_name(job_id))

    def end_marker(self, job_id: str) -> bytes:
        return scripts.end_marker(job_id)

    def kill_server(self) -> None:
        self.tmux.run("kill-server", check=False)

    def retire(self) -> None:
        if not self.tmux.sessions():
            self.kill_server()


def status_left(job: JobStart, session: str) -> str:
    """The status bar's left side (``p-<id> <worker> <command> [running]
    0:02:14``); writes the job's status.sh, which ticks the last part."""
    write_file(os.path.join(job.job_dir, "status.sh"), scripts.status_sh(job.job_dir))
    command = job.command
    shown = command if len(command) <= COMMAND_IN_STATUS else command[: COMMAND_IN_STATUS - 1] + "…"
    shown = " ".join(shown.split())
    status_cmd = "sh " + quote(os.path.join(job.job_dir, "status.sh"))
    return f"{session} {job.worker} {escape_format(shown)} #({escape_format(status_cmd)}) "


def escape_format(text: str) -> str:
    """Text shown literally in status-left, which is both a tmux format
    (``#``) and a strftime(3) string (``%``)."""
    return text.replace("#", "##").replace("%", "%%")
