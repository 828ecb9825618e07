"""The states of a job that both sides agree on.

The client adds one of its own, ``unknown`` (p/store.py): a job it has not
heard of for a while. Agents never send it.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    QUEUED = "queued"  # waiting for its engine to run it (Slurm: PENDING, with the reason)
    RUNNING = "running"
    DONE = "done"  # exited by itself; exit code recorded
    STOPPED = "stopped"  # ended by `p stop` (or cancelled in its engine)
    TIMEOUT = "timeout"  # ended by its time limit (--timeout: exit status 124)
    LOST = "lost"  # the worker has no trace of it (wiped ~/.p, other host, a failed node)

    @property
    def finished(self) -> bool:
        return self not in (State.QUEUED, State.RUNNING)
