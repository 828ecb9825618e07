"""Riding out a link that breaks, for the verbs that follow a job.

`p logs -f`, `p wait`, an attached terminal and the streaming run follow a
job that lives on the worker whatever happens to the link: when the link
breaks they say so once, reconnect with exponential backoff and jitter
(capped, so a link that comes back is used within seconds), resume exactly
where they were (the log by its byte offset), and give up only after the
config's ``reconnect_for`` (default 10 minutes), with one line saying how
to pick the job up again.
"""

from __future__ import annotations

import time

from . import link as link_module
from . import output
from .agent_client import AgentRefused
from .errors import LINK_LOST, PError
from .table import duration

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from .link import Link

    T = TypeVar("T")

FIRST_DELAY = 0.5
MAX_DELAY = 15.0


def backoff_delays(first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> Callable[[], float]:
    """Each call, the next wait: doubling up to ``cap``, each drawn from its
    upper half so that many clients cut at once do not come back at once."""
    attempt = 0

    def delay() -> float:
        nonlocal attempt
        import random  # only once a link is lost: it costs every run ~1 ms to import

        ceiling = min(cap, first * 2 ** attempt)
        attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    return delay


class Relink:
    """A link to one worker that ``follow`` re-opens when it breaks."""

    def __init__(self, link: Link, *, what: str, resume_hint: str) -> None:
        self.link = link
        self.what = what  # "following job 1a2b3c4d", for the messages
        self.resume_hint = resume_hint  # "`p logs -f 1a2b3c4d`"

    @property
    def worker(self) -> str:
        return self.link.worker.name

    def follow(self, step: Callable[[Link], T]) -> T:
        """``step(link)`` until it returns; when the link breaks under it,
        reconnect and call it again (``step`` resumes from where it got)."""
        while True:
            try:
                return step(self.link)
            except AgentRefused:
                raise
            except PError as exc:
                if exc.exit_code != LINK_LOST:
                    raise
            self.link.close()
            self.link = self.reconnect()

    def reconnect(self) -> Link:
        """A new link to the worker, tried with backoff until the config's
        ``reconnect_for`` has passed; said once when it breaks and once when
        it is back."""
        from .config import load

        limit = load().reconnect_for
        output.say(f"p: the link to {self.worker} broke while {self.what}; reconnecting "
                   f"(giving up after {duration(limit)})")
        give_up = time.monotonic() + limit
        delay = backoff_delays()
        while True:
            time.sleep(min(delay(), max(0.0, give_up - time.monotonic())))
            try:
                link = link_module.connect(self.worker)
            except AgentRefused:
                raise
            except PError as exc:
                if time.monotonic() >= give_up:
                    raise PError(f"the link to {self.worker} stayed down for {duration(limit)} "
                                 f"({exc.message}); the job keeps running there: {self.resume_hint} picks "
                                 "it up again", exit_code=LINK_LOST) from None
                continue
            output.say(f"p: the link to {self.worker} is back; {self.what} again")
            return link
