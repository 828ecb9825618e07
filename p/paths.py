"""Where the client keeps things, honouring the XDG base directory variables."""

from __future__ import annotations

import os
import stat

from .errors import PError


def _xdg(variable: str, fallback: str) -> str:
    value = os.environ.get(variable, "")
    # The spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return value
    return os.path.join(os.path.expanduser("~"), fallback)


def config_dir() -> str:
    return os.path.join(_xdg("XDG_CONFIG_HOME", ".config"), "p")


def config_file() -> str:
    return os.path.join(config_dir(), "config.yaml")


def data_dir() -> str:
    return os.path.join(_xdg("XDG_DATA_HOME", ".local/share"), "p")


def jobs_dir() -> str:
    return os.path.join(data_dir(), "jobs")


def events_file() -> str:
    """The client's event log (p/events.py): one JSON line per transition."""
    return os.path.join(data_dir(), "events.jsonl")


def cache_dir() -> str:
    return os.path.join(_xdg("XDG_CACHE_HOME", ".cache"), "p")


def runtime_dir() -> str:
    """Private, short-pathed directory for SSH control and agent sockets.

    Unix socket paths are limited to ~100 bytes, so this stays short and
    lives in XDG_RUNTIME_DIR or /tmp, never under a deep home directory.
    """
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    path = os.path.join(base, "p") if base and os.path.isabs(base) else f"/tmp/p-{os.getuid()}"
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise PError(f"cannot create the runtime directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PError(f"{path} is not a directory owned by you; remove it or set XDG_RUNTIME_DIR")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def name_digest(text: str, length: int = 16) -> str:
    """A file name for ``text`` (a worker's sockets, a directory's spare):
    hex of its SHA-256, without loading hashlib (see sources.sha256)."""
    from p_protocol.sources import sha256

    return sha256(text.encode(errors="surrogateescape")).hexdigest()[:length]
