"""The states of a job that both sides agree on.

The client adds one of its own, ``unknown`` (p/store.py): a job it has not
heard of for a while. Agents never send it.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    # Accepted by the worker, not running yet: it waits in the worker's queue
    # (agent/p_agent/queue.py) for a free slot and the GPUs it asked for, or
    # in its engine's own queue (Slurm: PENDING, with the reason). Its start
    # time is unset.
    QUEUED = "queued"
    # Held in the worker's queue until someone approves it (`p approve`);
    # `p reject` ends it without running (REJECTED).
    PENDING_APPROVAL = "pending-approval"
    RUNNING = "running"
    DONE = "done"  # exited by itself; exit code recorded
    STOPPED = "stopped"  # ended by `p stop` (or cancelled in its engine)
    TIMEOUT = "timeout"  # ended by its time limit (--timeout: exit status 124)
    REJECTED = "rejected"  # `p reject` on a job pending approval: it never ran
    LOST = "lost"  # the worker has no trace of it (wiped ~/.p, other host, a failed node)

    @property
    def waiting(self) -> bool:
        """Not started yet, and may still start."""
        return self in (State.QUEUED, State.PENDING_APPROVAL)

    @property
    def finished(self) -> bool:
        return self is not State.RUNNING and not self.waiting
