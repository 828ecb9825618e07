"""Issue 17, the worker side: what `p` promises when the worker's own files
cannot be trusted (pid files), live on other filesystems, fill a disk, are
left half-synced, or could be read by others. Real workers, real `p`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import PClient


def _not_private(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Files under ``root`` that are not 0600 (0700 for programs) and
    directories that are not 0700; sockets are left to their directory."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if os.path.join(directory, name) not in skip]
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISDIR(info.st_mode):
                ok = mode == 0o700
            elif stat.S_ISREG(info.st_mode):
                ok = mode in (0o600, 0o700)
            else:
                ok = True
            if not ok:
                found.append(f"{oct(mode)} {path}")
    return found


def test_every_file_p_keeps_on_the_worker_is_private(p1: PClient) -> None:
    (p1.workdir / "data.txt").write_text("synced\n")
    assert p1("--", "echo hi > made-by-job; exit 3").returncode == 3
    tty_job = p1("-n", "-d", "--", "true", check=True).stdout.strip()
    p1("wait", tty_job, check=True)
    root = p1.worker_home("w1") / ".p"
    # Workdirs and spares hold the user's files with the modes they had
    # (programs must stay executable); their directories are private.
    skip = tuple(str(root / name / entry.name) for name in ("workdirs", "spares")
                 for entry in (root / name).iterdir())
    assert _not_private(root, skip) == []
    # The job's own files keep the user's umask, as over `ssh host cmd`.
    (made,) = root.glob("workdirs/*/made-by-job")
    assert stat.S_IMODE(made.stat().st_mode) == 0o644
