"""Ports of a job's worker on localhost: `p port` and the run form's `-p`.

A forward is ``ssh -O forward -L 127.0.0.1:LOCAL:localhost:REMOTE`` in the
worker's own master (Transport.forward, as for the agent's socket), held
by a `p` process (the holder) for as long as it lasts. A listener alone
does not keep a master alive past ControlPersist, so the holder also keeps
one quiet session open through it (`cat`, which ends with its stdin). The
holder ends the forward on Ctrl+C or SIGTERM (`p port --stop`), when the
job ends, or when the link goes.

Each live forward has a state file in the runtime directory,
``ports/<local>.json``, and the holder keeps ``ports/<local>.lock`` locked:
a state file whose lock nobody holds is stale, and its pid is never
signalled.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from p_protocol.states import State
from p_protocol.wire import Op

from . import link as link_module
from . import paths
from .errors import LINK_LOST, PError
from .fsutil import atomic_write, private_open
from .joblink import JobLink, open_job

# A background holder says this on stdout once its forward is up.
READY = "ready"


def parse_mapping(text: str) -> tuple[int, int]:
    """``REMOTE[:LOCAL]`` -> (remote, local); LOCAL defaults to REMOTE."""
    remote, _, local = text.partition(":")
    try:
        ports = int(remote), int(local or remote)
    except ValueError:
        raise PError(f"{text!r} is not a port: use REMOTE or REMOTE:LOCAL, e.g. 8888 or 8888:9999",
                     exit_code=2) from None
    for port in ports:
        if not 0 < port < 65536:
            raise PError(f"{port} is not a port number (1-65535)", exit_code=2)
    return ports


def _dir() -> str:
    directory = os.path.join(paths.runtime_dir(), "ports")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return directory


def _state_path(local: int) -> str:
    return os.path.join(_dir(), f"{local}.json")


def _lock_path(local: int) -> str:
    return os.path.join(_dir(), f"{local}.lock")


def _held(local: int) -> bool:
    """Whether a holder holds the lock of local port ``local``."""
    try:
        with open(_lock_path(local)) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


class Forward:
    """One live forward, as its state file says."""

    def __init__(self, job: str, worker: str, remote: int, local: int, pid: int) -> None:
        self.job = job
        self.worker = worker
        self.remote = remote
        self.local = local
        self.pid = pid

    @property
    def url(self) -> str:
        return f"http://localhost:{self.local}/"


def forwards() -> list[Forward]:
    """The live forwards, by local port; stale state files are removed."""
    found = []
    for name in sorted(os.listdir(_dir())):
        if not name.endswith(".json") or not name[:-5].isdigit():
            continue
        local = int(name[:-5])
        forward = _read_state(local)
        if forward is None or not _held(local):
            for path in (_state_path(local), _lock_path(local)):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            continue
        found.append(forward)
    return sorted(found, key=lambda forward: forward.local)


def _read_state(local: int) -> Forward | None:
    """A state file's forward, checked; None if it holds none."""
    try:
        with open(_state_path(local)) as src:
            data = json.load(src)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    job, worker, remote, pid = data.get("job"), data.get("worker"), data.get("remote"), data.get("pid")
    if not (isinstance(job, str) and isinstance(worker, str) and all(
            isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in (remote, pid))):
        return None
    return Forward(job, worker, remote, local, pid)  # type: ignore[arg-type]


def check_free(local: int) -> None:
    """A clear line when something here already listens on ``local``."""
    for forward in forwards():
        if forward.local == local:
            raise PError(f"local port {local} already forwards port {forward.remote} of job "
                         f"{forward.job[:8]}; choose another LOCAL (REMOTE:LOCAL) or `p port --stop {local}`")
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", local))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PError(f"local port {local} is already in use on this machine; choose another LOCAL, "
                         f"e.g. `p port <id> REMOTE:{local + 1}`") from None
        if exc.errno == errno.EACCES:
            raise PError(f"local port {local} needs privileges here; choose one above 1023 "
                         f"(REMOTE:LOCAL)") from None
        raise
    finally:
        probe.close()


def start_background(job: str, remote: int, local: int) -> Forward:
    """Start a holder that outlives this `p`; return once its forward is up
    (or raise what went wrong, in one line)."""
    check_free(local)
    holder = subprocess.Popen([sys.executable, "-m", "p.ports", job, str(remote), str(local)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    assert holder.stdout is not None and holder.stderr is not None
    said = holder.stdout.readline().strip()
    holder.stdout.close()
    if said != READY:
        problem = holder.stderr.read().strip().splitlines()
        holder.wait()
        raise PError(problem[-1].removeprefix("p: ") if problem else "the port forward ended at once",
                     exit_code=holder.returncode or 1)
    holder.stderr.close()
    forward = _read_state(local)
    if forward is None:
        raise PError(f"the forward of local port {local} ended at once")
    return forward


def say_started(forward: Forward) -> None:
    print(f"p: {forward.url} forwards port {forward.remote} of job {forward.job[:8]} on {forward.worker}, "
          f"in the background until the job ends; `p port --stop {forward.local}` ends it sooner", file=sys.stderr)


def stop(forward: Forward, timeout: float = 10.0) -> None:
    """End a holder (SIGTERM), only while it holds its lock."""
    if not _held(forward.local):
        return
    os.kill(forward.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _held(forward.local):
        if time.monotonic() > deadline:
            raise PError(f"the forward of local port {forward.local} (pid {forward.pid}) did not end")
        time.sleep(0.05)


def hold(job_prefix: str, remote: int, local: int, *, announce: bool) -> int:
    """Forward ``local`` to the job's ``remote`` until Ctrl+C, SIGTERM, the
    job's end or the link's. ``announce``: say READY on stdout once up
    (for start_background) instead of telling a person."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with open_job(job_prefix) as opened:
        view = opened.view()
        # A job still waiting (queued, pending approval) gets its forward
        # now: whatever it serves answers once it starts.
        if view is None or State(view["state"]).finished:
            state = "gone from its worker" if view is None else view.get("state")
            raise PError(f"job {opened.record.short_id} is not running ({state}); nothing of it listens "
                         "on a port")
        check_free(local)
        with private_open(_lock_path(local)) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PError(f"local port {local} is being forwarded by another p; see `p port --list`") from None
            transport = opened.link.transport
            listen, target = f"127.0.0.1:{local}", f"localhost:{remote}"
            transport.forward(listen, target, what=f"port {remote}")
            try:
                return _keep(opened, remote, local, stopped, announce)
            finally:
                transport.cancel_forward(listen, target)
                try:
                    os.unlink(_state_path(local))
                except FileNotFoundError:
                    pass


def _keep(opened: JobLink, remote: int, local: int, stopped: threading.Event, announce: bool) -> int:
    """The forward's life, once it is up; its exit status."""
    record = opened.record
    # A quiet session keeps the master alive while the forward is idle.
    session = subprocess.Popen(opened.link.transport.ssh_argv("cat >/dev/null"), stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atomic_write(_state_path(local), json.dumps({"job": record.id, "worker": record.worker, "remote": remote,
                                                 "pid": os.getpid()}))
    job_ended = threading.Event()
    threading.Thread(target=_wait_for_end, args=(opened, job_ended, stopped), daemon=True).start()
    where = f"port {remote} of job {record.short_id} on {record.worker}"
    if announce:
        print(READY, flush=True)
        devnull = os.open(os.devnull, os.O_RDWR)  # nobody reads these any more
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    else:
        print(f"http://localhost:{local}/", flush=True)
        print(f"p: forwarding localhost:{local} to {where}; Ctrl+C ends it", file=sys.stderr, flush=True)
    code = 0
    try:
        while not stopped.wait(0.2):
            if session.poll() is not None:
                print(f"p: the link to {record.worker} is gone, and with it the forward of {where}",
                      file=sys.stderr)
                code = LINK_LOST
                break
    except KeyboardInterrupt:
        pass
    finally:
        if session.stdin is not None:
            session.stdin.close()  # its `cat` ends
        try:
            session.wait(timeout=5)
        except subprocess.TimeoutExpired:
            session.kill()
    if job_ended.is_set():
        print(f"p: job {record.short_id} ended, and with it the forward of {where}", file=sys.stderr)
    return code


def _wait_for_end(opened: JobLink, job_ended: threading.Event, stopped: threading.Event) -> None:
    """Stop the forward when the job ends. A link that fails says nothing
    here: the forward then lasts until Ctrl+C or the link's end. The wait
    has a connection of its own, which the process's end closes: closing
    one that a thread reads from would wait for that read."""
    try:
        link_module.connect(opened.record.worker).agent.request(Op.WAIT, id=opened.record.id, blocking=True)
    except (PError, OSError):
        return
    job_ended.set()
    stopped.set()


if __name__ == "__main__":
    # A background holder (start_background): job, remote, local.
    try:
        sys.exit(hold(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), announce=True))
    except PError as exc:
        print(f"p: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
