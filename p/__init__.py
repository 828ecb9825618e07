"""p: push a command to a more powerful machine and track it as a job."""

from p_protocol import VERSION as __version__

__all__ = ["__version__"]
