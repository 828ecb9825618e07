"""Spare copies: a ready copy of the last sync of each client directory.

A resync must cost what an rsync into a fixed directory costs, yet every job
gets its own workdir. So when a job starts, its freshly synced workdir is
copied (in the background, at low priority) into ``spares/<key>/``; the next
job from the same directory takes that copy over as its workdir by a rename,
and rsync only updates it. A copy is a real one, never hard links: jobs
cannot change each other's files.

A spare holds what was synced from the user's directory, secrets included:
it is dropped with the last job of its directory (or by `p worker clean`),
and a copy still running then is dropped when it ends instead of taking the
spare's place.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
from collections.abc import Callable

from p_protocol.layout import Layout

TMP_MARK = ".tmp-"


def copy_tree(source: str, dest: str) -> bool:
    """``dest`` made a real copy of the directory ``source`` (never hard
    links: no job may change another's files); False if cp failed."""
    return subprocess.run(["cp", "-a", source, dest], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


class Spares:
    def __init__(self, layout: Layout, rmtree: Callable[[str], None]) -> None:
        self.layout = layout
        self.rmtree = rmtree
        # Guards the moments a copy becomes the spare and a spare is dropped.
        self.lock = threading.Lock()
        self.copying: set[str] = set()  # temp paths of copies in flight
        self.unwanted: set[str] = set()  # of those, the ones dropped meanwhile

    def take(self, key: str, workdir: str) -> bool:
        """Make the spare of ``key`` the job's workdir (a rename); False when
        there is none and the workdir starts empty."""
        spare = self.layout.spare(key)
        with self.lock:
            try:
                os.rename(spare, workdir)
                return True
            except FileNotFoundError:
                os.makedirs(workdir, mode=0o700, exist_ok=True)
                return False
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        # The user put workdirs (or spares) on a filesystem of its own: a
        # local copy still beats sending everything again.
        copied = copy_tree(spare, workdir)
        self.drop(key)
        if not copied:
            self.rmtree(workdir)
            os.makedirs(workdir, mode=0o700)
        return copied

    def copy_from(self, key: str, workdir: str, job_id: str) -> None:
        """Copy ``workdir`` into the spare of ``key``, in the background."""
        spare = self.layout.spare(key)
        tmp = f"{spare}{TMP_MARK}{job_id[:8]}"
        with self.lock:
            if os.path.exists(spare) or tmp in self.copying:
                return
            self.copying.add(tmp)
        # Lowest CPU and I/O priority: the user's job comes first.
        ionice = ["ionice", "-c", "3"] if shutil.which("ionice") else []

        def copy() -> None:
            result = subprocess.run(["nice", "-n", "19", *ionice, "cp", "-a", workdir, tmp],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            with self.lock:
                self.copying.discard(tmp)
                wanted = tmp not in self.unwanted
                self.unwanted.discard(tmp)
                if wanted and result.returncode == 0 and not os.path.exists(spare):
                    try:
                        os.rename(tmp, spare)
                    except OSError:
                        pass
            self.rmtree(tmp)

        threading.Thread(target=copy, daemon=True).start()

    def sweep(self, cutoff: float) -> None:
        """Copies left by an agent that died while making them (mtime before
        ``cutoff``): never renamed into spares, so never built on."""
        with self.lock:
            try:
                entries = [entry for entry in os.scandir(self.layout.spares_dir)
                           if TMP_MARK in entry.name and entry.path not in self.copying]
            except FileNotFoundError:
                return
            for entry in entries:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    self.rmtree(entry.path)

    def drop(self, key: str | None = None) -> int:
        """Remove the spare of ``key`` (every spare: None) and any copy of it
        in flight; the number of spares removed."""
        prefix = None if key is None else os.path.basename(self.layout.spare(key))
        removed = 0
        with self.lock:
            try:
                entries = list(os.scandir(self.layout.spares_dir))
            except FileNotFoundError:
                return 0
            for entry in entries:
                if prefix is not None and entry.name.split(TMP_MARK)[0] != prefix:
                    continue
                if entry.path in self.copying:
                    self.unwanted.add(entry.path)  # its thread removes it when cp ends
                    continue
                self.rmtree(entry.path)
                removed += TMP_MARK not in entry.name
        return removed
