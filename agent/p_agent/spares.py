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
import stat
import subprocess
import threading
import time
from collections.abc import Callable

from p_protocol.layout import Layout

TMP_MARK = ".tmp-"
# The most ready copies one directory may have (each costs its tree's size).
MAX_SPARES = 4
# How many times `mark` looks for the clock's next tick (0.5 ms apart).
MARK_TRIES = 100


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
        # Per ready spare: its inode and ctime when sealed (a spare replaced
        # or resealed since is not trusted), and the job whose sync it is an
        # exact copy of, if it is one. In memory only: a restarted agent
        # knows none, and the next sync runs as usual.
        self.seals: dict[str, tuple[int, int, str | None]] = {}

    def _slots(self, key: str) -> list[str]:
        """The paths a ready copy of ``key`` may have."""
        spare = self.layout.spare(key)
        return [spare] + [f"{spare}.{n}" for n in range(1, MAX_SPARES)]

    def take(self, key: str, workdir: str) -> tuple[bool, str | None]:
        """Make a ready copy of ``key`` the job's workdir (a rename): whether
        there was one (else the workdir starts empty), and the job whose
        synced workdir it is an exact copy of, when that is known (see
        copy_from; the client may then skip its sync)."""
        for spare in self._slots(key):
            with self.lock:
                try:
                    info = os.lstat(spare)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    continue
                seal = self.seals.pop(spare, None)
                origin = seal[2] if seal is not None else None
                if seal is not None and seal[:2] != (info.st_ino, info.st_ctime_ns):
                    # Replaced, or its seal set again (which would hide an
                    # edit made before from _untouched): never trusted.
                    self.rmtree(spare)
                    continue
                try:
                    os.rename(spare, workdir)  # now this job's alone: checked outside the lock
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    break
            # A rename sets the directory's own ctime: its files are held to
            # the seal read before it.
            if _untouched(workdir, info.st_ctime_ns):
                return True, origin
            self.rmtree(workdir)  # changed on the worker since it was made: never trusted
        else:
            with self.lock:
                # A directory seen before: its runs came faster than copies
                # were made (a first run finds none, and that says nothing).
                seen = key in self.wanted or any(
                    path.split(TMP_MARK)[0] in self._slots(key) for path in self.copying)
                self.wanted[key] = min(MAX_SPARES, self.wanted.get(key, 1) + 1) if seen else 1
            os.makedirs(workdir, mode=0o700, exist_ok=True)
            return False, None
        # The user put workdirs (or spares) on a filesystem of its own: a
        # local copy still beats sending everything again.
        copied = _untouched(spare, info.st_ctime_ns) and copy_tree(spare, workdir)
        self.drop(key)
        if not copied:
            self.rmtree(workdir)
            os.makedirs(workdir, mode=0o700)
        return copied, None

    def mark(self) -> int | None:
        """A time by the workdirs' own filesystem clock (what its ctimes
        are) later than every change made there before this call, and no
        later than any change made after it returns: a job started after it
        can change its workdir only at or after the mark. Takes up to one
        clock tick; None if the filesystem would not tell."""
        path = os.path.join(self.layout.spares_dir, f".mark-{threading.get_ident()}-{time.monotonic_ns()}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None
        try:
            try:
                os.unlink(path)
            except OSError:
                pass  # `clean` took it already
            first = os.fstat(fd).st_ctime_ns
            # Timestamps come from a clock that ticks every few ms: a change
            # made in the tick we were created in may carry our very ctime.
            # The next tick is later than all of them.
            for _ in range(MARK_TRIES):
                time.sleep(0.0005)
                os.utime(fd)
                now = os.fstat(fd).st_ctime_ns
                if now > first:
                    return now
            return None
        except OSError:
            return None
        finally:
            os.close(fd)

    def copy_from(self, key: str, workdir: str, job_id: str, mark: int | None = None) -> None:
        """Copy ``workdir`` into a spare of ``key``, in the background, if
        fewer are ready or on their way than runs of it have wanted.

        ``mark``: taken (see `mark`) after the job's sync and before it
        started. If nothing in ``workdir`` has a ctime from the mark on once
        the copy is made, the job had changed nothing in it before or while
        it was copied: the spare is exactly what was synced for ``job_id``,
        and `take` says so. Otherwise (a job that writes into its workdir)
        it is a spare like any, which the next sync puts right."""
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
        import shutil  # only here: see files.rmtree

        # Lowest CPU and I/O priority: the user's job comes first.
        ionice = ["ionice", "-c", "3"] if shutil.which("ionice") else []

        def copy() -> None:
            result = subprocess.run(["nice", "-n", "19", *ionice, "cp", "-a", workdir, tmp],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            exact = result.returncode == 0 and mark is not None and _unchanged_since(workdir, mark)
            with self.lock:
                self.copying.discard(tmp)
                wanted = tmp not in self.unwanted
                self.unwanted.discard(tmp)
                if wanted and result.returncode == 0 and not os.path.exists(spare):
                    try:
                        os.rename(tmp, spare)
                        # Sealed: its ctime is now later than any of its files'
                        # (its times stay those synced).
                        kept = os.lstat(spare)
                        os.utime(spare, ns=(kept.st_atime_ns, kept.st_mtime_ns), follow_symlinks=False)
                        sealed = os.lstat(spare)
                        self.seals[spare] = (sealed.st_ino, sealed.st_ctime_ns, job_id if exact else None)
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
                self.seals.pop(entry.path, None)
                self.rmtree(entry.path)
                removed += TMP_MARK not in entry.name
        return removed


def _unchanged_since(workdir: str, mark: int) -> bool:
    """Whether nothing in ``workdir``, itself included, changed at or after
    ``mark`` (a ctime)."""
    try:
        return os.lstat(workdir).st_ctime_ns < mark and _untouched(workdir, mark - 1)
    except OSError:
        return False


def _untouched(root: str, sealed: int) -> bool:
    """Whether nothing under ``root`` (``root`` itself aside) has a ctime
    later than ``sealed``. A file edited in a spare (even keeping its size
    and mtime, which rsync's quick check alone would trust) has a later
    ctime than the spare's seal, and nothing but the kernel can set a
    ctime; a file added, removed or renamed changes its directory's."""
    found = _newer_by_find(root, sealed)
    if found is not None:
        return not found
    try:
        pending = [root]
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


def _newer_by_find(root: str, sealed: int) -> bool | None:
    """`_untouched`'s walk done by GNU find, in C, in about half the time
    (what a resync of a big tree waits for): whether something under
    ``root`` has a ctime later than ``sealed`` (find compares to the
    nanosecond); None where find cannot tell (BusyBox's lacks -cnewer, an
    unreadable directory): the walk here then decides."""
    reference = f"{root}.ref-{threading.get_ident()}-{time.monotonic_ns()}"
    try:
        os.close(os.open(reference, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return None
    try:
        os.utime(reference, ns=(sealed, sealed))
        result = subprocess.run(["find", root, "-mindepth", "1", "-cnewer", reference, "-print", "-quit"],
                                stdin=subprocess.DEVNULL, capture_output=True)
    except OSError:
        return None
    finally:
        try:
            os.unlink(reference)
        except OSError:
            pass
    return bool(result.stdout) if result.returncode == 0 else None
