"""Errors the user sees as one line; a traceback only with --debug."""

from __future__ import annotations


class PError(Exception):
    """A failure explained in one line: what is wrong and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM reached `p` running a job: raised where Ctrl+C would be, so
    every clean-up path runs, and passed on to the job as SIGTERM."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


# What ssh exits with when it cannot reach the host or loses it: scripts tell
# a link failure from the job's own failure by it.
LINK_LOST = 255
