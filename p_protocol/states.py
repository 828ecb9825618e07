"""The states of a job that both sides agree on.

The client adds one of its own, ``unknown`` (p/store.py): a job it has not
heard of for a while. Agents never send it.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    RUNNING = "running"
    DONE = "done"  # exited by itself; exit code recorded
    STOPPED = "stopped"  # ended by `p stop`
    LOST = "lost"  # the worker has no trace of it (wiped ~/.p, other host)

    @property
    def finished(self) -> bool:
        return self is not State.RUNNING
