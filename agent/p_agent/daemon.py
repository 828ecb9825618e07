"""Running the agent as a background daemon, one per worker user and version."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time

from p_protocol.layout import Layout

from . import executor, unpack
from .jobs import Jobs
from .server import Agent, AgentServer

IDLE_CHECK_SECONDS = 60.0
STALE_UNPACK_SECONDS = 3600.0
LOG_LIMIT = 1 << 20


def restore_user_environment() -> None:
    """Undo what the launcher set only for the agent's own start.

    A frozen agent unpacks itself under ``~/.p/tmp`` (``/tmp`` may be noexec),
    so the launcher overrides ``TMPDIR``; jobs must see the user's own.
    """
    if "P_USER_TMPDIR" in os.environ:
        user_tmpdir = os.environ.pop("P_USER_TMPDIR")
        if user_tmpdir:
            os.environ["TMPDIR"] = user_tmpdir
        else:
            os.environ.pop("TMPDIR", None)
    # The frozen binary's bootloaders point the dynamic linker at their
    # unpack directory and leave notes for themselves: none of it is the
    # user's, and tmux and every job would inherit it.
    if getattr(sys, "frozen", False):
        original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is not None:
            os.environ["LD_LIBRARY_PATH"] = original
        else:
            os.environ.pop("LD_LIBRARY_PATH", None)
    for name in list(os.environ):
        if name.startswith(("_PYI_", "_PYIBoot", "STATICX_", "_MEIPASS")):
            del os.environ[name]


def sweep_unpack_dirs(layout: Layout) -> None:
    """Remove what frozen agents killed by a signal left in ~/.p/tmp (a
    clean exit removes its own) and half-made copies in ~/.p/lib; recent
    ones may belong to a starting agent."""
    cutoff = time.time() - STALE_UNPACK_SECONDS
    for directory, prefixes in ((layout.tmp_dir, ("staticx-", "_MEI")), (layout.lib_dir, (".unpack-",))):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(prefixes) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                import shutil  # only here: see files.rmtree

                shutil.rmtree(entry.path, ignore_errors=True)


def serve(layout: Layout, engine: str, detach: bool, unpack_to: tuple[str, str] | None = None) -> int:
    """Serve until idle, running jobs with ``engine``. ``unpack_to``
    (directory, sha256 of this binary): a frozen agent also unpacks itself
    there, before it reports ready, since its bundle is deleted as soon as
    the launcher returns."""
    frozen = unpack.sources()  # restore_user_environment forgets the bundle
    jobs = Jobs(layout, executor.make(engine, layout))
    jobs.ensure_layout()
    restore_user_environment()
    sweep_unpack_dirs(layout)
    lock_fd = os.open(layout.agent_pidfile(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # this version already serves here
    ready_fd = _daemonize(layout) if detach else None
    if frozen is not None and unpack_to is not None:
        try:
            unpack.unpack(*frozen, *unpack_to)
        except Exception as exc:  # noqa: BLE001 - whatever it was, only later starts get slower
            # This start goes on from the binary; the next ones start from it too.
            print(f"could not unpack to {unpack_to[0]}: {exc}", file=sys.stderr)
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    socket_path = layout.agent_socket()
    if os.path.lexists(socket_path):
        os.unlink(socket_path)  # stale: we hold the lock, nobody serves it
    old_umask = os.umask(0o077)
    try:
        server = AgentServer(socket_path, Agent(layout, jobs))
    finally:
        os.umask(old_umask)
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    jobs.queue.start_thread()  # jobs queued while no agent ran start now
    _watch_idle(server)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        if os.path.lexists(socket_path):
            os.unlink(socket_path)
    if server.left_idle:
        jobs.executor.retire()  # no client can reach this agent any more
    return 0


def _daemonize(layout: Layout) -> int:
    """Detach; the launcher returns only once the socket accepts clients."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        ready = os.read(read_fd, 1)
        os._exit(0 if ready else 1)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir(os.path.expanduser("~"))
    log_path = os.path.join(layout.run_dir, "agent.log")
    if os.path.exists(log_path) and os.path.getsize(log_path) > LOG_LIMIT:
        os.replace(log_path, log_path + ".1")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    return write_fd


def _watch_idle(server: AgentServer) -> None:
    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(IDLE_CHECK_SECONDS):
            if server.agent.idle():
                server.left_idle = True
                server.shutdown()
                return
            try:
                server.agent.jobs.sweep()
            except OSError as exc:
                print(f"sweeping left-over workdirs: {exc}", file=sys.stderr)

    threading.Thread(target=watch, daemon=True).start()
