"""What passes between the client `p` and the worker's `p-agent`, defined once.

Both programs import this module, so it must stay stdlib-only (the agent is
frozen into static binaries). A reader learns the whole protocol here:

* the worker-side layout under ``~/.p/`` (``Layout``);
* the wire format: one JSON object per line over a unix socket, a request
  from the client and one reply from the agent (``Op`` lists every request);
* the job states both sides agree on (``State``).

``PROTOCOL`` changes whenever a request or reply changes shape; ``VERSION`` is
the release, and a client replaces any agent whose version differs.
"""

from __future__ import annotations

import json
import os
import re
from enum import Enum

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

VERSION = "0.1.0"
PROTOCOL = 2

# A job id is a lowercase hex UUID4 without dashes; anything else from the
# command line or from a worker is refused before it can reach a path or shell.
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SHORT_ID_LEN = 8
# Worker names become file names and tmux status text: keep them tame.
WORKER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Names the spare workdir of one client directory (a hash the client makes).
SPARE_KEY_RE = re.compile(r"^[0-9a-f]{16}$")
MAX_LINE = 1 << 20


class State(str, Enum):
    """Lifecycle of a job. ``unknown`` exists only on the client side."""

    RUNNING = "running"
    DONE = "done"  # exited by itself; exit code recorded
    STOPPED = "stopped"  # ended by `p stop`
    LOST = "lost"  # the worker has no trace of it (wiped ~/.p, other host)
    UNKNOWN = "unknown"  # client-side: may have ended while nobody watched

    @property
    def finished(self) -> bool:
        return self in (State.DONE, State.STOPPED, State.LOST)


class Op(str, Enum):
    """Every request a client may send; each takes the fields named below."""

    HELLO = "hello"  # {} -> {version, protocol, home, shell}
    PREPARE = "prepare"  # {id, spare} -> {reused}: the job's workdir, from the spare copy if any
    START = "start"  # {id, command, cwd, worker, cols, rows, tty, attach, spare?} -> {job}
    STATUS = "status"  # {ids: [..]} -> {jobs: {id: job|None}}
    WAIT = "wait"  # {id} -> {job}, sent when the job has finished
    LOGS = "logs"  # {id, offset, follow} -> {size}, then raw bytes until EOF
    STOP = "stop"  # {id, grace} -> {job}
    INTERRUPT = "interrupt"  # {id} -> {}: SIGINT to the job's process group (Ctrl+C off a terminal)
    REMOVE = "remove"  # {id, force, spare?} -> {}: job dir, workdir, session; the spare copy if named
    CLEAN = "clean"  # {} -> {jobs, workdirs, spares}: all but running jobs' files, every spare
    RESOLVE = "resolve"  # {id, path} -> {path, is_dir}: a path inside the workdir
    WORKDIRS = "workdirs"  # {ids: [..]} -> {present: [..]}: which workdirs exist


class Layout:
    """Paths of the worker-side state, all under one root (``~/.p``)."""

    def __init__(self, root: str) -> None:
        self.root = root

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.root, "bin")

    @property
    def jobs_dir(self) -> str:
        return os.path.join(self.root, "jobs")

    @property
    def workdirs_dir(self) -> str:
        return os.path.join(self.root, "workdirs")

    @property
    def run_dir(self) -> str:
        """Sockets and the agent's pid file; mode 0700."""
        return os.path.join(self.root, "run")

    @property
    def lib_dir(self) -> str:
        """Frozen agents unpacked once, one directory per binary's sha256."""
        return os.path.join(self.root, "lib")

    @property
    def tmp_dir(self) -> str:
        """Where frozen agents unpack, so a noexec /tmp does not matter."""
        return os.path.join(self.root, "tmp")

    def agent_socket(self, version: str = VERSION) -> str:
        return os.path.join(self.run_dir, f"agent-{version}.sock")

    def agent_pidfile(self, version: str = VERSION) -> str:
        return os.path.join(self.run_dir, f"agent-{version}.pid")

    @property
    def tmux_socket(self) -> str:
        return os.path.join(self.run_dir, "tmux.sock")

    @property
    def tmux_conf(self) -> str:
        return os.path.join(self.root, "tmux.conf")

    @property
    def spares_dir(self) -> str:
        return os.path.join(self.root, "spares")

    def spare(self, key: str) -> str:
        """A ready copy of the last sync of one client directory."""
        if not isinstance(key, str) or not SPARE_KEY_RE.match(key):
            raise ProtocolError(f"malformed spare key {key!r}")
        return os.path.join(self.spares_dir, key)

    def job_dir(self, job_id: str) -> str:
        return os.path.join(self.jobs_dir, checked_job_id(job_id))

    def workdir(self, job_id: str) -> str:
        return os.path.join(self.workdirs_dir, checked_job_id(job_id))


# Files of one job directory (``~/.p/jobs/<id>/``), as named by the spec.
JOB_FILES = ("cmd", "cwd", "worker", "started_at", "output.log", "exitcode", "tmux_session")
# Written next to ``exitcode`` when the job ended through `p stop`.
STOPPED_MARK = "stopped"


def session_name(job_id: str) -> str:
    return "p-" + checked_job_id(job_id)[:SHORT_ID_LEN]


def checked_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise ProtocolError(f"malformed job id {job_id!r}")
    return job_id


class ProtocolError(Exception):
    """A message that does not follow this module; the peer gets its text."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError("message too long")
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def error(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text}


def job_view(
    job_id: str,
    *,
    state: State,
    started_at: float | None,
    ended_at: float | None,
    exit_code: int | None,
    session_open: bool,
) -> dict[str, Any]:
    """The job description an agent sends: one shape for every reply."""
    return {
        "id": job_id,
        "state": state.value,
        "started_at": started_at,
        "ended_at": ended_at,
        "exit_code": exit_code,
        "session_open": session_open,
    }
