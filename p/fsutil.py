"""How the client writes its files: atomically, so a crash leaves the old
content or the new, never half of one; and privately, owner only (files
0600, directories 0700): they name hosts, commands and paths."""

from __future__ import annotations

import fcntl
import os
import time

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import IO


def private_open(path: str, mode: str = "a") -> IO[str]:
    """A file p keeps (a lock, a log, a mark), 0600 (also one an older p
    made looser): ``a`` to append to, ``w+`` to write afresh and read back."""
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC if mode == "w+" else os.O_WRONLY | os.O_CREAT | os.O_APPEND
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)


def locked(path: str) -> IO[str]:
    """``path`` (a lock file, as private_open makes it) held exclusively
    until the file is closed: ``with locked(path):``. A function, not a
    contextlib one: contextlib costs every command's start ~0.4 ms."""
    lock = private_open(path)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
    except BaseException:
        lock.close()
        raise
    return lock


def atomic_write(path: str, data: str | bytes, mode: int = 0o600, durable: bool = True) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)  # also one an older p made looser
    # pid + time: unique among writers without importing tempfile (startup).
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
