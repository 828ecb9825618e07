"""Directory sync with rsync over the worker's SSH master."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

from .errors import PError
from .pignore import PignoreError, read_pignore, rsync_rules
from .progress import Progress
from .ssh import Transport

# `.gitignore` files at every level apply; `.git/` itself is kept because
# builds read the commit or the latest tag from it. `push_filter` puts the
# `.pignore` and `--exclude` rules ahead of it.
GITIGNORE_FILTER = ["--filter=:- .gitignore"]
# Narrows a listing to the names `_looks_secret` judges. `.git/` first: git
# names files after branches and tags (`refs/heads/id_cleanup`), not secrets.
SENSITIVE_FILTER = ["--exclude=.git/", "--include=*/", "--include=.ssh/**", "--include=*.pem", "--include=*.key",
                    "--include=.env", "--include=.env.*", "--include=id_*", "--exclude=*"]
# Templates of a `.env`, committed by convention so others know what to fill in.
ENV_TEMPLATES = ("example", "sample", "template")
PROGRESS_RE = re.compile(rb"^\s*([\d,]+)\s+\d+%")
TOTAL_RE = re.compile(rb"^Total transferred file size: ([\d,]+)", re.MULTILINE)
# What a transfer's `--stats` say it sent (rsync 3.1+ says "regular files").
FILES_SENT_RE = re.compile(rb"^Number of (?:regular )?files transferred: ([\d,]+)", re.MULTILINE)
BYTES_SENT_RE = re.compile(rb"^Total bytes sent: ([\d,]+)", re.MULTILINE)
PR_SET_PDEATHSIG = 1  # prctl(2)
NO_RSYNC = "rsync is not installed here; install it (e.g. `apt install rsync`)"


def remote_spec(transport: Transport, path: str) -> str:
    user, at, host = transport.target.rpartition("@")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"{user}{at}{host}:{path}"


def push_filter(source_dir: str, excludes: list[str]) -> list[str]:
    """rsync's filter for a push of ``source_dir``: its `.pignore`, then the
    ``excludes`` (`--exclude`, later ones winning), then `.gitignore`s."""
    try:
        patterns = read_pignore(source_dir)
    except PignoreError as exc:
        raise PError(f"{exc}; fix it or remove it", exit_code=2) from None
    return [*rsync_rules([*patterns, *excludes]), *GITIGNORE_FILTER]


def _listed_files(source_dir: str, filters: list[str]) -> list[str]:
    """The files (and symlinks) a push with ``filters`` would send, as paths
    relative to ``source_dir``: rsync itself lists them, locally."""
    argv = ["rsync", "-a", "-m", "--list-only", *filters, "--", source_dir.rstrip("/") + "/"]
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
    except FileNotFoundError:
        raise PError(NO_RSYNC) from None
    if result.returncode not in (0, 23, 24):  # 23, 24: some files vanished or were unreadable
        problem = result.stderr.decode(errors="replace").strip().splitlines()
        raise PError(f"rsync cannot list {source_dir}: {problem[-1] if problem else 'no reason given'}")
    found = []
    for line in result.stdout.decode(errors="replace").splitlines():
        fields = line.split(None, 4)
        if len(fields) < 5 or line[0] not in "-l":
            continue  # directories, devices
        found.append(fields[4].split(" -> ")[0] if line[0] == "l" else fields[4])
    return found


def sensitive_files(source_dir: str, excludes: list[str]) -> list[str]:
    """What a push of ``source_dir`` would send that looks like credentials
    (relative paths), with the push's own filter."""
    listed = _listed_files(source_dir, [*push_filter(source_dir, excludes), *SENSITIVE_FILTER])
    return sorted(name for name in listed if _looks_secret(name))


def planned_files(source_dir: str, excludes: list[str]) -> list[tuple[str, int]]:
    """Every file a push of ``source_dir`` would send and its size in bytes,
    largest first (`p sync --dry-run`): no worker is asked."""
    sizes = []
    for name in _listed_files(source_dir, push_filter(source_dir, excludes)):
        try:
            sizes.append((name, os.lstat(os.path.join(source_dir, name)).st_size))
        except OSError:
            continue  # gone since rsync listed it
    return sorted(sizes, key=lambda entry: (-entry[1], entry[0]))


def _looks_secret(name: str) -> bool:
    """Names that usually hold credentials: anything under a `.ssh/`
    directory, `*.pem`, `*.key`, `.env` and `.env.*` (but not its templates,
    `.env.example`), and private keys `id_*` (with no extension: `id_rsa.pub`
    and `id_map.py` are not). Nothing inside a `.git/` directory: git's own
    files are named after refs, which anyone may call `id_...`."""
    parts = name.split("/")
    if ".git" in parts[:-1]:
        return False
    base = parts[-1]
    if base.startswith(".env."):
        return base.rpartition(".")[2] not in ENV_TEMPLATES
    return (".ssh" in parts[:-1] or base.endswith((".pem", ".key")) or base == ".env"
            or (base.startswith("id_") and "." not in base))


class Sent:
    """What a transfer sent, by rsync's own count."""

    __slots__ = ("files", "bytes")

    def __init__(self, files: int, sent_bytes: int) -> None:
        self.files = files  # regular files transferred (not those copied or left alone on the worker)
        self.bytes = sent_bytes  # bytes over the link, protocol included


class NoSpace(PError):
    """The receiving side's disk filled during a transfer."""


def no_space_on_worker(worker: str, directory: str) -> NoSpace:
    return NoSpace(f"no space left on {worker} under {directory}; free some (`p rm` finished jobs, "
                   f"`p worker clean {worker}`) or move its workdirs to a bigger disk "
                   f"(`p worker set {worker} --scratch PATH`), then run again")


def push(transport: Transport, source_dir: str, dest_dir: str, copy_dest: str | None, exact: bool,
         excludes: list[str]) -> Sent | None:
    """Copy ``source_dir`` into ``dest_dir`` on the worker.

    ``exact``: ``dest_dir`` already holds an older copy (the spare); rsync
    updates it and deletes what the source lacks or ignores. Otherwise
    ``copy_dest`` may name an earlier workdir of the same directory: files
    unchanged there are copied on the worker instead of sent (copies, not
    hard links, so no job can change another job's files). Returns what
    it sent, if rsync said. ``excludes``: `--exclude` patterns (see
    push_filter).
    """
    argv = ["rsync", "-a", "-s", *push_filter(source_dir, excludes), "-e", transport.rsync_shell()]
    if exact:
        argv += ["--delete", "--delete-excluded"]
    elif copy_dest is not None:
        argv.append(f"--copy-dest={copy_dest}")
    return _run(transport, argv, [source_dir.rstrip("/") + "/", remote_spec(transport, dest_dir + "/")],
                f"syncing to {transport.worker.name}",
                no_space_on_worker(transport.worker.name, os.path.dirname(dest_dir.rstrip("/"))))


def pull(transport: Transport, remote_path: str, local_dest: str) -> None:
    # -s: the remote path reaches the worker's rsync as is, never its shell
    # (older rsync needs it asked for). A local path with ':' would name a host.
    if not local_dest.startswith("/"):
        local_dest = "./" + local_dest
    argv = ["rsync", "-a", "-s", "-e", transport.rsync_shell()]
    _run(transport, argv, [remote_spec(transport, remote_path), local_dest],
         f"pulling from {transport.worker.name}",
         NoSpace(f"no space left here under {os.path.abspath(local_dest)}; free some and pull again"))


def _run(transport: Transport, argv: list[str], paths: list[str], label: str, full: NoSpace) -> Sent | None:
    """rsync ``argv`` over ``paths``; ``full``: what to say when the
    receiving side's disk filled."""
    show = sys.stderr.isatty()
    # A bar needs its total before the transfer, or its speed and ETA can
    # never settle: a dry run says what will be sent.
    total = _bytes_to_send(argv, paths) if show else None
    if show:
        argv = [*argv, "--info=progress2", "--no-inc-recursive"]
    argv = [*argv, "--stats"]  # printed last, after any progress lines
    tail = b""
    try:
        process = subprocess.Popen([*argv, "--", *paths], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_dies_with_p())
    except FileNotFoundError:
        raise PError(NO_RSYNC) from None
    assert process.stdout is not None and process.stderr is not None
    try:
        with Progress(label, total) as progress:
            pending = b""
            for chunk in iter(lambda: process.stdout.read1(4096), b""):  # type: ignore[union-attr]
                tail = (tail + chunk)[-8192:]  # the stats are a dozen short lines
                # rsync redraws its line with \r: only whole lines are numbers.
                *lines, pending = re.split(rb"[\r\n]", pending + chunk)
                for line in reversed(lines):
                    match = PROGRESS_RE.match(line)
                    if match:
                        progress.update(int(match[1].replace(b",", b"")))
                        break
    except BaseException:
        # An rsync that outlived p would go on writing into a workdir no job owns.
        process.kill()
        process.wait()
        raise
    stderr = process.stderr.read().decode(errors="replace")
    code = process.wait()
    if code == 255 or "ssh:" in stderr or "Permission denied (" in stderr:
        raise transport.explain(stderr)
    if code != 0 and "No space left on device" in stderr:
        raise full
    if code != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        raise PError(f"rsync failed (exit {code}) {label}: {lines[-1] if lines else 'no reason given'}")
    files, sent = FILES_SENT_RE.search(tail), BYTES_SENT_RE.search(tail)
    if files is None or sent is None:
        return None
    return Sent(int(files[1].replace(b",", b"")), int(sent[1].replace(b",", b"")))


def _dies_with_p() -> Callable[[], None] | None:
    """For Popen's preexec_fn: on Linux the child gets SIGKILL when p dies,
    however p dies (SIGKILL included), so no transfer outlives it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only here: a synced run's cost, not every command's

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)  # p died before the signal was armed

    return set_death_signal


def _bytes_to_send(argv: list[str], paths: list[str]) -> int | None:
    """The size of what rsync will transfer, by a dry run (None if it fails:
    the real run then reports why)."""
    try:
        result = subprocess.run([*argv, "--dry-run", "--stats", "--", *paths], stdin=subprocess.DEVNULL,
                                capture_output=True, preexec_fn=_dies_with_p())
    except FileNotFoundError:
        raise PError(NO_RSYNC) from None
    match = TOTAL_RE.search(result.stdout)
    return int(match[1].replace(b",", b"")) if match and result.returncode == 0 else None


def print_plan(source_dir: str, excludes: list[str]) -> int:
    """`p sync --dry-run`, `p --dry-run-sync -- cmd`: what a run from
    ``source_dir`` would sync, largest first, and the total; nothing is sent."""
    from .table import size

    planned = planned_files(source_dir, excludes)
    shown = [(size(count), name) for name, count in planned]
    width = max((len(text) for text, _ in shown), default=0)
    lines = [f"{text.rjust(width)}  {name}" for text, name in shown]
    total = sum(count for _, count in planned)
    exact = f" ({total} bytes)" if total >= 1024 else ""
    lines.append(f"{len(planned)} file{'s' if len(planned) != 1 else ''}, {size(total)}{exact} "
                 "would be synced; nothing was sent")
    print("\n".join(lines))
    return 0
