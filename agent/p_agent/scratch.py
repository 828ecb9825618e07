"""Where a worker keeps workdirs and spares: under ``~/.p`` or on scratch
space of the user's choosing (a big disk when the home quota is small).

The setting lives on the worker, so every client agrees: ``~/.p/workdirs``
and ``~/.p/spares`` become symlinks to ``<scratch>/workdirs`` and
``<scratch>/spares``. Paths the client computes stay the same, and the two
stay on one filesystem, so a spare becomes a workdir by a rename.
"""

from __future__ import annotations

import os

from p_protocol import ProtocolError
from p_protocol.layout import Layout

NAMES = ("workdirs", "spares")


def where(layout: Layout) -> tuple[str, int]:
    """(the directory holding the workdirs, its free bytes)."""
    workdirs = os.path.realpath(layout.workdirs_dir)
    try:
        info = os.statvfs(workdirs)
    except OSError as exc:
        raise ProtocolError(f"the workdirs at {workdirs} are out of reach: {exc.strerror}") from None
    return os.path.dirname(workdirs), info.f_bavail * info.f_frsize


def place(layout: Layout, path: str) -> None:
    """Move the workdirs (finished jobs' ones; the caller makes sure none
    is in use) and drop the spares, then point ``~/.p`` at ``path``. A
    ``path`` that is ``~/.p`` itself puts them back there."""
    home = os.path.expanduser("~")
    scratch = os.path.realpath(os.path.join(home, os.path.expanduser(path)))
    default = scratch == os.path.realpath(layout.root)
    for name in NAMES:
        link = os.path.join(layout.root, name)
        target = os.path.join(scratch, name)
        current = os.path.realpath(link)
        if current == target:
            continue
        if default:
            os.unlink(link)  # a symlink: the scratch space it named keeps the files until moved
            os.makedirs(link, mode=0o700)
        else:
            try:
                os.makedirs(target, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise ProtocolError(f"cannot use {scratch} as scratch space: {exc.strerror}") from None
            if not os.access(target, os.W_OK | os.X_OK):
                raise ProtocolError(f"cannot use {scratch} as scratch space: {target} is not writable")
        if os.path.isdir(current):
            import shutil  # only here: see files.rmtree

            for entry in os.listdir(current):
                source = os.path.join(current, entry)
                if name == "spares":
                    shutil.rmtree(source, ignore_errors=True)  # a cache: the next sync makes it again
                else:
                    shutil.move(source, os.path.join(target, entry))  # copies across filesystems
        if not default:
            if not os.path.islink(link) and os.path.isdir(link):
                os.rmdir(link)  # emptied above
            new = f"{link}.new"
            if os.path.lexists(new):
                os.unlink(new)
            os.symlink(target, new)
            os.replace(new, link)
