"""Spare copies: a ready copy of the last sync of each client directory.

A resync must cost what an rsync into a fixed directory costs, yet every job
gets its own workdir. So when a job starts, its freshly synced workdir is
copied (in the background, at low priority) into ``spares/<key>/``; the next
job from the same directory takes that copy over as its workdir by a rename,
and rsync only updates it. A copy is a real one, never hard links: jobs
cannot change each other's files.

Runs of one directory that come faster than a copy is made (back to back,
or several at once: two seeds, two configs) each want a spare of their own:
so a directory has up to MAX_SPARES of them (``spares/<key>``,
``spares/<key>.1``, ...). How many is learnt: a run that finds none ready
asks for one more next time (``wanted``), so a user who starts four runs
at once gets four ready copies from then on, and one who runs one at a time
keeps one. The agent keeps this in memory only: a restarted agent starts
again from one.

A spare holds what was synced from the user's directory, secrets included:
its copies are dropped with the last job of its directory (or by `p worker
clean`), and a copy still running then is dropped when it ends instead of
taking a spare's place.
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
# The most ready copies one directory may have (each costs its tree's size).
MAX_SPARES = 4


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
        self.wanted: dict[str, int] = {}  # per key, how many ready copies to keep

    def _slots(self, key: str) -> list[str]:
        """The paths a ready copy of ``key`` may have."""
        spare = self.layout.spare(key)
        return [spare] + [f"{spare}.{n}" for n in range(1, MAX_SPARES)]

    def take(self, key: str, workdir: str) -> bool:
        """Make a ready copy of ``key`` the job's workdir (a rename); False
        when there is none and the workdir starts empty."""
        with self.lock:
            for spare in self._slots(key):
                if os.path.isdir(spare) and not _untouched(spare):
                    self.rmtree(spare)  # changed on the worker since it was made: never trusted
                try:
                    os.rename(spare, workdir)
                    return True
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    break
            else:
                # A directory seen before: its runs came faster than copies
                # were made (a first run finds none, and that says nothing).
                seen = key in self.wanted or any(
                    path.split(TMP_MARK)[0] in self._slots(key) for path in self.copying)
                self.wanted[key] = min(MAX_SPARES, self.wanted.get(key, 1) + 1) if seen else 1
                os.makedirs(workdir, mode=0o700, exist_ok=True)
                return False
        # The user put workdirs (or spares) on a filesystem of its own: a
        # local copy still beats sending everything again.
        copied = copy_tree(spare, workdir)
        self.drop(key)
        if not copied:
            self.rmtree(workdir)
            os.makedirs(workdir, mode=0o700)
        return copied

    def copy_from(self, key: str, workdir: str, job_id: str) -> None:
        """Copy ``workdir`` into a spare of ``key``, in the background, if
        fewer are ready or on their way than runs of it have wanted."""
        with self.lock:
            slots = self._slots(key)
            ready = [slot for slot in slots if os.path.exists(slot)]
            making = [path for path in self.copying if path.split(TMP_MARK)[0] in slots]
            free = [slot for slot in slots if slot not in ready
                    and not any(path.split(TMP_MARK)[0] == slot for path in making)]
            if len(ready) + len(making) >= self.wanted.get(key, 1) or not free:
                return
            spare = free[0]
            tmp = f"{spare}{TMP_MARK}{job_id[:8]}"
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
                        os.utime(spare)  # sealed: its ctime is now later than any of its files'
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
        slots = None if key is None else {os.path.basename(slot) for slot in self._slots(key)}
        removed = 0
        with self.lock:
            if key is not None:
                self.wanted.pop(key, None)
            try:
                entries = list(os.scandir(self.layout.spares_dir))
            except FileNotFoundError:
                return 0
            for entry in entries:
                if slots is not None and entry.name.split(TMP_MARK)[0] not in slots:
                    continue
                if entry.path in self.copying:
                    self.unwanted.add(entry.path)  # its thread removes it when cp ends
                    continue
                self.rmtree(entry.path)
                removed += TMP_MARK not in entry.name
        return removed


def _untouched(spare: str) -> bool:
    """Whether nothing in ``spare`` changed since it was sealed. A file
    edited there (even keeping its size and mtime, which rsync's quick check
    alone would trust) has a later ctime than the sealed directory, and
    nothing but the kernel can set a ctime. (What was added or removed
    there, rsync's --delete and its quick check put right anyway.)"""
    try:
        sealed = os.lstat(spare).st_ctime_ns
        pending = [spare]
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    if info.st_ctime_ns > sealed:
                        return False
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
    except OSError:
        return False
    return True
