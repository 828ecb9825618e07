"""The seam between the agent and what runs jobs: one engine per worker.

The agent (jobs.py) owns the job directory, whose files are the truth
(p_protocol.layout.JobFile); an engine only runs the job so that its script
writes the end files, and says which jobs it still holds. To add an engine
(Slurm, Kubernetes, PBS), write one module with a class that has these
methods, name it in ``p_protocol.ENGINES`` and in ``make`` below; the
client names a worker's engine in its config (``engine:``), and the
launcher starts the agent with it.
"""

from __future__ import annotations

from collections.abc import Container

from p_protocol import ENGINES

# typing costs the agent's every start ~2.5 ms: the interface below is for
# type checkers and readers, and engines need not inherit from it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from p_protocol.jobspec import JobSpec
    from p_protocol.layout import Layout
    from p_protocol.states import State
else:
    Protocol = object


class EngineError(Exception):
    """An engine could not do what was asked; its text goes to the client."""


class JobStart:
    """What an engine needs to start one job (its directory already holds
    ``cmd``, ``cwd``, ``worker``, ``started_at``, an empty ``output.log``
    and, when given, ``env`` and ``secrets``, which the job's script sources
    before the command runs and which it deletes ``secrets`` after reading)."""

    def __init__(self, job_id: str, job_dir: str, workdir: str, command: str, worker: str, cols: int, rows: int,
                 tty: bool, expect_client: bool, spec: JobSpec) -> None:
        self.job_id = job_id
        self.job_dir = job_dir
        self.workdir = workdir
        self.command = command
        self.worker = worker
        self.cols = cols
        self.rows = rows
        self.tty = tty  # give the job a terminal (else none, as `ssh host cmd`)
        self.expect_client = expect_client  # a client is on its way to attach
        self.spec = spec  # its resources and limits, for engines that schedule


class Verdict:
    """What an engine knows of a job beyond its files: that it waits
    (queued, and why), or how the engine ended it; and where it is."""

    def __init__(self, state: State | None, reason: str | None = None, engine_id: str | None = None,
                 node_list: str | None = None) -> None:
        self.state = state  # None: as the job's files say
        self.reason = reason
        self.engine_id = engine_id  # the job's id in the engine (Slurm's job id)
        self.node_list = node_list  # where it runs (Slurm's NodeList)


class Executor(Protocol):
    name: str

    def setup(self) -> None:
        """Once, when the agent starts."""

    def start(self, job: JobStart) -> None:
        """Run the job; raise (with a message for the user) if it cannot."""

    def alive(self) -> Container[str]:
        """The job ids the engine still holds (running, or showing a
        terminal someone may attach to); empty when it holds none."""

    def verdict(self, job_id: str, alive: Container[str]) -> Verdict:
        """What the engine adds to the job's files (``alive``: what
        ``alive()`` returned, so one look serves every job)."""

    def signal(self, job_id: str, signum: int) -> None:
        """Send ``signum`` to every process of the job, if it runs."""

    def attach_argv(self, job_id: str, ctrl_c_detaches: bool = False) -> list[str] | None:
        """The worker-side command that attaches a terminal to the job, or
        None when there is nothing to attach to. ``ctrl_c_detaches``: in
        that terminal Ctrl+C detaches (an engine that cannot do that gives
        the job Ctrl+C as usual)."""

    def close(self, job_id: str) -> None:
        """Let go of the job: its terminal goes, its files stay."""

    def end_marker(self, job_id: str) -> bytes:
        """What the job's script writes into output.log after the job's own
        output (readers stop there even before ``log_end`` exists)."""

    def retire(self) -> None:
        """The agent leaves, idle: let go of what the engine keeps warm
        between jobs (never a job's own processes)."""


def make(engine: str, layout: Layout) -> Executor:
    if engine == "tmux":
        from .tmux import TmuxExecutor

        return TmuxExecutor(layout)
    if engine == "slurm":
        from .slurm import SlurmExecutor

        return SlurmExecutor(layout)
    raise ValueError(f"unknown engine {engine!r} (this agent has {', '.join(ENGINES)})")
