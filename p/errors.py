"""Errors the user sees as one line; a traceback only with --debug."""

from __future__ import annotations


class PError(Exception):
    """A failure explained in one line: what is wrong and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# What ssh exits with when it cannot reach the host or loses it: scripts tell
# a link failure from the job's own failure by it.
LINK_LOST = 255
