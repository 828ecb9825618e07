"""What the last sync of a directory to a worker sent, so a run with nothing
changed can skip rsync (whose scan of both sides is what a big tree costs).

After a sync, the client keeps a manifest per directory and worker (under
the XDG cache dir, 0600): a digest of every entry under the directory as the
sync saw it (path, type and mode, size, mtime, ctime, inode, device), the
filter the sync used, and the job it synced for. The worker's spare of that
directory is a copy of that job's synced workdir, and PREPARE says when it
knows it to be an exact one (agent/p_agent/spares.py). A run skips rsync
only when the spare it was handed is such a copy of the very sync the
manifest describes and a fresh walk of the directory gives the same digest.

Every entry counts, ignored ones too: reading `.gitignore`s the way rsync
does is rsync's job, and a walk that skipped what it took for ignored could
miss a change rsync would send. A change anywhere costs an rsync, never a
wrong tree. ctime cannot be set from user space (`touch -d` sets mtime, and
moves ctime to now): a file rewritten at the same size with its mtime put
back still differs.

The file is a cache: one that is missing, damaged, another directory's or
another version's costs one rsync, never correctness.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import threading

from p_protocol import JOB_ID_RE, VERSION

from . import paths
from .fsutil import atomic_write

FORMAT = 5
# A change made in the same clock tick just after the walk read an entry
# may leave all its figures as they were (git's "racily clean" files): a
# walk that met an entry changed this recently keeps no manifest.
RACY_NS = 100_000_000
MAX_BYTES = 1 << 30
MAX_HEADER = 1 << 20
ENTRIES = ".entries"
# An entry walked here: mode, size, mtime and ctime (ns), inode, device, and
# the length of its path (relative to the directory), which follows.
ENTRY = struct.Struct("<QQqqQQQ")
# An entry walked by GNU find: path, NUL, type, mode, size, mtime and ctime
# (to the ns), inode, device.
FIND_FORMAT = "%P\\0%y %m %s %T@ %C@ %i %D\\n"


class Tree:
    """A directory's state, by a walk: ``entries``, one per entry, of which
    ``digest`` is the hash; ``racy``: some entry changed too recently to
    vouch for it."""

    __slots__ = ("entries", "digest", "racy")

    def __init__(self, entries: bytes, racy: bool) -> None:
        self.entries, self.digest, self.racy = entries, hashlib.sha256(entries).hexdigest(), racy


def walk(root: str) -> Tree | None:
    """Every entry under ``root`` (itself too, with an empty path), in the
    order the directories list them (an order that changes costs one
    rsync); None when some part could not be read (rsync then says what
    is wrong). GNU find walks in C, in three quarters of the time: a big
    tree's walk is what a run with nothing changed waits for."""
    import time

    since = time.time_ns() - RACY_NS
    return _walk_by_find(root, since) or _walk_here(root, since)


def _walk_by_find(root: str, since: int) -> Tree | None:
    """`walk` by GNU find (None where there is none, or it failed): each
    entry as FIND_FORMAT says; an ``R`` on stderr for each changed since
    ``since`` (ns)."""
    import subprocess

    argv = ["find", root, "-printf", FIND_FORMAT,
            "(", "-newerct", f"@{since // 1_000_000_000}.{since % 1_000_000_000:09d}", "-fprintf", "/dev/stderr",
            "R", ")"]
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError:
        return None
    if result.returncode != 0 or result.stderr.strip(b"R"):
        return None
    return Tree(b"find\n" + result.stdout, b"R" in result.stderr)


def _walk_here(root: str, since: int) -> Tree | None:
    base = os.fsencode(root)
    found: list[bytes] = [b"here\n"]
    add, pack, is_dir = found.append, ENTRY.pack, stat.S_ISDIR
    try:
        top = os.lstat(base)
        add(pack(top.st_mode, top.st_size, top.st_mtime_ns, top.st_ctime_ns, top.st_ino, top.st_dev, 0))
        newest = top.st_ctime_ns
        pending = [b""]
        while pending:
            relative = pending.pop()
            with os.scandir(base + b"/" + relative) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    name = relative + entry.name
                    add(pack(info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino,
                             info.st_dev, len(name)))
                    add(name)
                    if info.st_ctime_ns > newest:
                        newest = info.st_ctime_ns
                    if is_dir(info.st_mode):
                        pending.append(name + b"/")
    except OSError:
        return None
    return Tree(b"".join(found), newest > since)


def _figures(entries: bytes) -> dict[bytes, tuple[bool, int, int, bytes]]:
    """Per relative path: whether it is a regular file, its size, its mtime
    in whole seconds, and all its figures as the walk wrote them."""
    kind, _, data = entries.partition(b"\n")
    figures: dict[bytes, tuple[bool, int, int, bytes]] = {}
    if kind == b"find":
        # path NUL figures NL path NUL ...: a path may hold a newline, a
        # figure never does.
        chunks = data.split(b"\0")
        name = chunks[0]
        for chunk in chunks[1:]:
            line, _, following = chunk.partition(b"\n")
            fields = line.split()
            if len(fields) == 7 and fields[2].isdigit():
                figures[name] = (fields[0] == b"f", int(fields[2]), int(fields[3].split(b".")[0] or b"0"), line)
            name = following
        return figures
    at = 0
    while at + ENTRY.size <= len(data):
        mode, size, mtime, *_, length = ENTRY.unpack_from(data, at)
        raw = data[at:at + ENTRY.size]
        at += ENTRY.size
        figures[data[at:at + length]] = (stat.S_ISREG(mode), size, mtime // 1_000_000_000, raw)
        at += length
    return figures


def quick_check_blind(before: bytes, now: Tree) -> list[bytes]:
    """Files changed since the walk ``before`` whose size and mtime in whole
    seconds are as they were: rsync's quick check, which compares only
    those, would not send them. Relative paths."""
    old = _figures(before)
    blind = []
    for name, figures in _figures(now.entries).items():
        was = old.get(name)
        if name and was is not None and was[3] != figures[3] and figures[0] and was[0] \
                and figures[1:3] == was[1:3]:
            blind.append(name)
    return blind


class Walk(threading.Thread):
    """`walk` in the background, while the worker prepares the workdir."""

    def __init__(self, root: str) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.tree: Tree | None = None
        self.start()

    def run(self) -> None:
        self.tree = walk(self.root)

    def result(self) -> Tree | None:
        self.join()
        return self.tree


_early: Walk | None = None


def walk_early(root: str) -> None:
    """Start `walk` of ``root`` now, for `walker` to hand over: the run
    form starts it before it imports what a run needs."""
    global _early
    _early = Walk(root)


def walker(root: str) -> Walk:
    """A walk of ``root`` started now, or the one `walk_early` started."""
    global _early
    early, _early = _early, None
    return early if early is not None and early.root == root else Walk(root)


class Manifest:
    """What one sync of ``cwd`` to ``worker`` sent: the directory with the
    digest ``tree`` (see `walk`), with ``filter`` (rsync's), for job
    ``sync``; ``secrets``: some of it looked like credentials (so a run
    without a change still asks). Its entries are in a file of their own,
    read only when something changed."""

    __slots__ = ("cwd", "worker", "filter", "tree", "sync", "secrets")

    def __init__(self, cwd: str, worker: str, filter: list[str], tree: str, sync: str, secrets: bool) -> None:
        self.cwd, self.worker, self.filter, self.tree, self.sync, self.secrets = \
            cwd, worker, filter, tree, sync, secrets

    def describes(self, filter: list[str], tree: Tree | None, origin: str | None) -> bool:
        """Whether a workdir made from ``origin``'s exact copy already holds
        what a sync with ``filter`` of the directory as ``tree`` would."""
        return origin is not None and origin == self.sync and tree is not None and tree.digest == self.tree \
            and filter == self.filter

    def entries(self) -> bytes | None:
        """The walk's entries, if the file holds those that hash to ``tree``."""
        try:
            with open(_file(self.cwd, self.worker) + ENTRIES, "rb") as src:
                entries = src.read(MAX_BYTES + 1)
        except OSError:
            return None
        return entries if hashlib.sha256(entries).hexdigest() == self.tree else None


def _file(cwd: str, worker: str) -> str:
    name = paths.name_digest(f"{worker}\0{cwd}", 32)
    return os.path.join(paths.cache_dir(), "manifests", name)


def load(cwd: str, worker: str) -> Manifest | None:
    """The manifest of the last sync of ``cwd`` to ``worker``, if a sound
    one is kept for exactly them."""
    try:
        with open(_file(cwd, worker), "rb") as src:
            data = json.loads(src.read(MAX_HEADER))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or set(data) != {"format", "version", "cwd", "worker", "filter", "tree",
                                                    "sync", "secrets"}:
        return None
    filter, tree, sync = data["filter"], data["tree"], data["sync"]
    if data["format"] != FORMAT or data["version"] != VERSION or data["cwd"] != cwd or data["worker"] != worker \
            or not isinstance(filter, list) or not all(isinstance(rule, str) for rule in filter) \
            or not isinstance(tree, str) or len(tree) != 64 \
            or not isinstance(sync, str) or JOB_ID_RE.match(sync) is None or not isinstance(data["secrets"], bool):
        return None
    return Manifest(cwd, worker, filter, tree, sync, data["secrets"])


def save(cwd: str, worker: str, filter: list[str], tree: Tree, sync: str, secrets: bool,
         last: Manifest | None) -> None:
    """Kept for the next run (the entries only when they changed since
    ``last``); a cache that cannot be written costs speed only."""
    header = {"format": FORMAT, "version": VERSION, "cwd": cwd, "worker": worker, "filter": filter,
              "tree": tree.digest, "sync": sync, "secrets": secrets}
    path = _file(cwd, worker)
    try:
        if last is None or last.tree != tree.digest:
            atomic_write(path + ENTRIES, tree.entries, durable=False)
        atomic_write(path, json.dumps(header), durable=False)
    except (OSError, UnicodeEncodeError):
        pass


def forget(cwd: str, worker: str) -> None:
    for path in (_file(cwd, worker), _file(cwd, worker) + ENTRIES):
        try:
            os.unlink(path)
        except OSError:
            pass
