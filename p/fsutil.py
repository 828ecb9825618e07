"""The one way the client writes a file: atomically, so a crash leaves the
old content or the new, never half of one."""

from __future__ import annotations

import os
import time


def atomic_write(path: str, data: str | bytes, mode: int = 0o600, durable: bool = True) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
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
