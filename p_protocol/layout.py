"""The worker-side state under ``~/.p/``: one definition of every path.

The agent creates and reads these; the client renders the few it needs in
the shell snippets it sends (p/provision.py) from here too.
"""

from __future__ import annotations

import os

from . import SPARE_KEY_RE, VERSION, ProtocolError, checked_job_id


class JobFile:
    """Files of one job directory (``~/.p/jobs/<id>/``). They are the truth:
    an engine's job script writes the end files, the agent keeps nothing in
    memory, so a restarted or upgraded agent sees every job as they say."""

    COMMAND = "cmd"
    SPEC = "spec.json"  # the job's p_protocol.jobspec.JobSpec
    CWD = "cwd"
    WORKER = "worker"
    STARTED_AT = "started_at"
    OUTPUT = "output.log"  # what the job's terminal (or pipe) showed
    PGID = "pgid"  # the job's process group
    ENDED_AT = "ended_at"  # end time (sub-second where `date` has %N)
    LOG_END = "log_end"  # bytes of output.log that are the job's
    EXIT_CODE = "exitcode"  # written last: a number here means "finished"
    STOPPED = "stopped"  # present when `p stop` ended the job
    TIMED_OUT = "timeout"  # present when the job's --timeout ended it (run.sh's watchdog)
    CPU_TIMES = "times"  # the shell's `times` before the job and after it: its CPU seconds
    PEAK_RSS = "peak_rss"  # bytes: the largest resident set of its processes the agent saw
    CAPTURE = "capture.awk"  # with --max-output: what feeds output.log (tmux's pipe), to the cap
    ENV = "env"  # `export NAME='value'` lines the job's script sources (jobspec.py)
    # The same for secrets: deleted once the job has read it, at the latest
    # when the job ends or is stopped, so no secret outlives its job.
    SECRETS = "secrets"
    # The client's `notify.worker_command`, run by the job's script when it
    # ends (with P_JOB_ID, P_EXIT, P_WORKER); its output goes to NOTIFY_LOG.
    NOTIFY = "notify"
    NOTIFY_LOG = "notify.log"
    SCRIPT = "run.sh"  # the job's script (agent/p_agent/scripts.py)
    # The pid of the job's script, the one process of its session:
    # while it runs, the session is open (tmux need not be asked).
    SCRIPT_PID = "run.pid"
    # The end files' space, reserved when the job starts (``pending/ended_at``...):
    # they are filled in place, then moved into the job's directory (one
    # `mv` for the three, ``exitcode`` last), so a full disk cannot lose the
    # job's end. Their values may be padded with spaces to END_FILE_SIZE.
    PENDING = "pending"
    # Left by a job script that could record its end in no way: the one
    # sign that names the cause (a full disk) rather than guessing it.
    END_FAILED = "end.failed"
    END_FILES = (ENDED_AT, LOG_END, EXIT_CODE)
    # Engines that hand the job to a scheduler (Slurm): its id there, the
    # node(s) it got, and how the scheduler ended it when the job's own
    # script could not say (`TIMEOUT`, `CANCELLED`, `NODE_FAIL <nodes>`...).
    ENGINE_ID = "engine_id"
    NODE_LIST = "node_list"
    ENGINE_END = "engine_end"
    # How to start the job when the worker's queue lets it through: the
    # terminal's size, whether it gets one, whether a client will attach.
    LAUNCH = "launch.json"
    GPUS = "gpus"  # the GPU indices it was given (`-g N`), e.g. "0,2"
    START_FAILED = "start.failed"  # why it could not start when its turn came
    REJECTED = "rejected"  # present when `p reject` ended it unrun


END_FILE_SIZE = 32


class Layout:
    """Paths of the worker-side state, all under one root (``~/.p``)."""

    def __init__(self, root: str) -> None:
        self.root = root

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.root, "bin")

    @property
    def jobs_dir(self) -> str:
        return os.path.join(self.root, "jobs")

    @property
    def workdirs_dir(self) -> str:
        return os.path.join(self.root, "workdirs")

    @property
    def run_dir(self) -> str:
        """Sockets and the agent's pid file; mode 0700."""
        return os.path.join(self.root, "run")

    @property
    def lib_dir(self) -> str:
        """Frozen agents unpacked once, one directory per binary's sha256."""
        return os.path.join(self.root, "lib")

    @property
    def tmp_dir(self) -> str:
        """Where frozen agents unpack, so a noexec /tmp does not matter."""
        return os.path.join(self.root, "tmp")

    def agent_socket(self, version: str = VERSION) -> str:
        return os.path.join(self.run_dir, f"agent-{version}.sock")

    def agent_pidfile(self, version: str = VERSION) -> str:
        return os.path.join(self.run_dir, f"agent-{version}.pid")

    def agent_launcher(self, version: str = VERSION) -> str:
        """How to start this version's agent (written by the client's start
        script): a job that ends while no agent runs starts one with it, so
        the worker's queue moves on."""
        return os.path.join(self.run_dir, f"agent-{version}.start")

    @property
    def queue_file(self) -> str:
        """The worker's queue, its jobs holding slots and its settings
        (agent/p_agent/queue.py)."""
        return os.path.join(self.root, "queue.json")

    @property
    def events_log(self) -> str:
        """One JSON line per job transition, append-only (agent/p_agent/events.py)."""
        return os.path.join(self.root, "events.jsonl")

    @property
    def tmux_socket(self) -> str:
        return os.path.join(self.run_dir, "tmux.sock")

    @property
    def tmux_conf(self) -> str:
        return os.path.join(self.root, "tmux.conf")

    @property
    def spares_dir(self) -> str:
        return os.path.join(self.root, "spares")

    def spare(self, key: str) -> str:
        """A ready copy of the last sync of one client directory."""
        if not isinstance(key, str) or not SPARE_KEY_RE.match(key):
            raise ProtocolError(f"malformed spare key {key!r}")
        return os.path.join(self.spares_dir, key)

    def job_dir(self, job_id: str) -> str:
        return os.path.join(self.jobs_dir, checked_job_id(job_id))

    def workdir(self, job_id: str) -> str:
        return os.path.join(self.workdirs_dir, checked_job_id(job_id))

