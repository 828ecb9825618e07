"""The transport: the system OpenSSH client, one multiplexed master per worker.

Every ssh and rsync invocation for a worker shares one ControlMaster, so only
the first command in ControlPersist's window pays for a handshake. The user's
whole ssh configuration applies (aliases, ProxyJump, agents, certificates);
p adds only what multiplexing needs, after the user's own options, because
OpenSSH keeps the first value it sees for each option.
"""

from __future__ import annotations

import os
import re
import sys

from . import paths
from .config import Config, Worker
from .errors import LINK_LOST, PError
from .fsutil import private_open

# subprocess and shlex are imported where a process is run: a warm link
# runs none, and they cost every command's start ~2 ms.
TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    import subprocess

CONTROL_PERSIST = "600"
CONNECT_TIMEOUT = "10"


def split_connection(connection: str) -> tuple[str, str | None]:
    """``user@host:port`` -> (``user@host``, ``port``); aliases pass through."""
    if not connection or connection.startswith("-") or any(c.isspace() for c in connection):
        raise PError(f"{connection!r} is not an SSH target; use user@host, user@host:port or an ssh_config alias")
    match = re.fullmatch(r"(?:(?P<user>[^@]+)@)?\[(?P<v6>[^\]]+)\](?::(?P<port>\d+))?", connection)
    if match:
        user = f"{match['user']}@" if match["user"] else ""
        return user + match["v6"], match["port"]
    head, sep, port = connection.rpartition(":")
    if sep and port.isdigit() and ":" not in head:
        return head, port
    if sep and not port.isdigit() and ":" not in head:
        raise PError(f"{connection!r}: the port after ':' must be a number")
    return connection, None


def host_of(connection: str) -> str:
    target, _ = split_connection(connection)
    return target.rpartition("@")[2]


class Transport:
    """How to reach one worker with ssh, rsync and tmux attach."""

    def __init__(self, config: Config, worker: Worker) -> None:
        self.worker = worker
        self.target, self.port = split_connection(worker.connection)
        self.runtime = paths.runtime_dir()
        ssh_config = worker.ssh_config or config.ssh_config
        self.user_options: list[str] = ["-F", os.path.expanduser(ssh_config)] if ssh_config else []
        for option in [*config.ssh_options, *worker.ssh_options]:
            self.user_options += ["-o", option]
        self._master_up = False  # known to be, in this process

    @property
    def key(self) -> str:
        """Names this worker's sockets; changes when its connection does."""
        text = "\0".join([self.worker.name, self.worker.connection, *self.user_options])
        return paths.name_digest(text)

    @property
    def control_path(self) -> str:
        """A symlink to the current master's socket (see ensure_master)."""
        return os.path.join(self.runtime, f"cm-{self.key}")

    def options(self, control_path: str | None = None) -> list[str]:
        opts = [
            *self.user_options,
            # One master per worker *and* its ssh options: %C would merge two
            # workers reaching one host with different keys or configs.
            "-o", f"ControlPath={control_path or self.control_path}",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
            "-o", "ServerAliveInterval=10",
            "-o", "ServerAliveCountMax=3",
        ]
        if not sys.stdin.isatty():
            # Nobody could answer a prompt; fail with a message instead.
            opts += ["-o", "BatchMode=yes"]
        if self.port:
            opts += ["-p", self.port]
        return opts

    def ssh_argv(self, remote_command: str | None = None, *, tty: bool = False) -> list[str]:
        argv = ["ssh", *self.options(), "-o", "ControlMaster=no"]
        if tty:
            # Quiet ssh's own chatter ("Shared connection to ... closed."
            # after every attach); errors still show.
            argv += ["-tt", "-o", "LogLevel=ERROR"]
        argv += ["--", self.target]
        if remote_command is not None:
            argv.append(remote_command)
        return argv

    def rsync_shell(self) -> str:
        """The ``-e`` of rsync: ssh with the same options and master."""
        import shlex

        return shlex.join(["ssh", *self.options(), "-o", "ControlMaster=no"])

    # -- the master -----------------------------------------------------------

    def master_alive(self) -> bool:
        """Whether a master listens behind ``cm-<key>``: a connect to its
        socket tells as `ssh -O check` does (a killed master leaves its
        socket file, and nothing accepts there), without a process (~10 ms,
        for each of fifty workers `worker ls --check` probes)."""
        return _listening(self.control_path)

    @property
    def master_log(self) -> str:
        """The master's stderr: what it saw, for errors that name a cause."""
        return os.path.join(self.runtime, f"master-{self.key}.log")

    def ensure_master(self) -> None:
        """A master for this worker. Each master listens on a socket of its
        own (``cm-<key[:10]><nonce>``) and ``cm-<key>``, which every other ssh
        names, is a symlink to the current one: so a master that went mute
        (a cut link) can be put aside for a new one (``retire_master``)
        while the sessions it carries (another terminal's `p logs -f`) go
        on, and come back with the link, instead of dying with it."""
        self._start_master(None, None, 0.0)

    def _start_master(self, script: str | None, forward: tuple[str, str] | None,
                      timeout: float) -> subprocess.CompletedProcess[str] | None:
        """Start a master unless one is up; with ``script``, the master's
        first session runs it (`sh -s`) and the master holds ``forward``
        (see run_script). None when a master was up already."""
        import subprocess

        if self._master_up or self.master_alive():
            self._master_up = True
            return None
        import fcntl

        # One master per worker: concurrent `p`s wait for the first one's
        # instead of starting (and leaking) their own.
        with private_open(os.path.join(self.runtime, f"master-{self.key}.lock")) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.master_alive():
                self._master_up = True
                return None
            self._remove_dead_sockets()
            socket_path = os.path.join(self.runtime, self._master_prefix + os.urandom(3).hex())
            # The master logs only to -E's file, at INFO: so a later error
            # can say what it saw (a channel the worker's sshd refused),
            # whatever the user's LogLevel. ControlPersist puts it in the
            # background once authenticated, its standard streams on
            # /dev/null: with -N -f at once, else after handing the first
            # session to itself, which ends when the script does.
            argv = ["ssh", *self.options(socket_path), "-o", "ControlMaster=yes", "-o", "LogLevel=INFO",
                    "-E", self.master_log, "-o", f"ControlPersist={CONTROL_PERSIST}",
                    # A forward's socket left by a master that is gone is replaced.
                    "-o", "StreamLocalBindUnlink=yes"]
            if forward is not None:
                argv += ["-L", f"{forward[0]}:{forward[1]}"]
            argv += ["-N", "-f", "--", self.target] if script is None else ["--", self.target, "sh -s"]
            private_open(self.master_log, "w+").close()  # a cause is named only if this master saw it
            # stderr to a file: an older ssh's master keeps it open for good.
            with private_open(os.path.join(self.runtime, f"first-{self.key}.err"), "w+") as err:
                try:
                    result = subprocess.run(argv, input=script, stdin=None if script else subprocess.DEVNULL,
                                            stdout=subprocess.PIPE if script else subprocess.DEVNULL,
                                            stderr=err, text=True, timeout=timeout or None)
                except subprocess.TimeoutExpired:
                    result = None
                err.seek(0)
                stderr = err.read()
            if os.path.exists(socket_path):  # up, even if the script failed
                link = f"{self.control_path}.{os.getpid()}"
                os.symlink(os.path.basename(socket_path), link)
                os.replace(link, self.control_path)  # atomic: no ssh sees no master
                self._master_up = True
            if result is None:
                raise self._no_answer(timeout)
            if result.returncode == 255 or not self._master_up:
                with open(self.master_log, errors="replace") as log:
                    raise self.explain(log.read() + stderr)
            return subprocess.CompletedProcess(argv, result.returncode, result.stdout, stderr)

    @property
    def _master_prefix(self) -> str:
        """Names this worker's masters' sockets (and the symlink): no longer
        than ``cm-<key>``, for a socket path has ~100 bytes and ssh adds 17
        while it binds."""
        return f"cm-{self.key[:10]}"

    def retire_master(self) -> None:
        """Put the current master aside: new commands get a new one, while
        the sessions it carries go on (it exits when they end and it has
        idled for ControlPersist, or when its keepalives give up)."""
        self._master_up = False
        try:
            os.unlink(self.control_path)
        except FileNotFoundError:
            pass

    def _remove_dead_sockets(self) -> None:
        """Sockets of this worker's masters that were killed (nothing
        listens): ssh would not replace one, and would quietly run without
        multiplexing, forever."""
        for name in os.listdir(self.runtime):
            path = os.path.join(self.runtime, name)
            if name.startswith(self._master_prefix) and not _listening(path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def master_saw(self, text: str) -> bool:
        try:
            with open(self.master_log, errors="replace") as log:
                return text in log.read()
        except OSError:
            return False

    def forward(self, local: str, remote: str, what: str = "the agent socket") -> None:
        """Forward ``local`` (a unix socket, or ``127.0.0.1:PORT``) to
        ``remote`` on the worker (the agent's socket, or ``localhost:PORT``),
        through the master: ``-L local:remote``.

        An earlier forward of the same socket is cancelled first: the master
        would otherwise answer "ok" and keep its dead listener.
        """
        import subprocess

        self.cancel_forward(local, remote)
        if local.startswith("/") and os.path.lexists(local):
            # Left by a master that is gone or was put aside (its sessions
            # go on): this one binds it afresh. Only now that a master is
            # up: one being made may fail while the old one comes back.
            os.unlink(local)
        result = subprocess.run(
            ["ssh", *self.options(), "-O", "forward", "-L", f"{local}:{remote}", "--", self.target],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        if result.returncode != 0:
            # The master sets the forward up locally: the worker's sshd is
            # not asked until a connection arrives, so it is not the cause.
            raise PError(f"cannot forward {what} of worker {self.worker.name}: "
                         f"{_last_line(result.stderr) or 'ssh -O forward failed'}", exit_code=LINK_LOST)

    def cancel_forward(self, local: str, remote: str) -> None:
        import subprocess

        subprocess.run(["ssh", *self.options(), "-O", "cancel", "-L", f"{local}:{remote}", "--", self.target],
                       stdin=subprocess.DEVNULL, capture_output=True)

    def close_master(self) -> None:
        import subprocess

        subprocess.run(["ssh", *self.options(), "-O", "exit", "--", self.target],
                       stdin=subprocess.DEVNULL, capture_output=True)

    # -- commands -------------------------------------------------------------

    def run_script(self, script: str, *, timeout: float = 60.0, forward: tuple[str, str] | None = None) -> str:
        """Run a POSIX sh script on the worker (sent on stdin, so the login
        shell's syntax never matters); its stdout, or a PError. With no
        master up, the script is the first session of a new one: one ssh
        process, not two. ``forward``: (local, remote) as in ``forward``,
        set up once the script ran (by that new master: one process more
        saved, and the two of ``forward``)."""
        import subprocess

        result = self._start_master(script, forward, timeout)
        if result is None:
            try:
                result = subprocess.run(
                    self.ssh_argv("sh -s"), input=script, capture_output=True, text=True, timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise self._no_answer(timeout) from None
            if result.returncode == 255:
                raise self.explain(result.stderr)
            if forward is not None and result.returncode == 0:
                self.forward(*forward)
        if result.returncode != 0:
            raise PError(f"worker {self.worker.name}: {_last_line(result.stderr) or 'command failed'}")
        return result.stdout

    def _no_answer(self, timeout: float) -> PError:
        """A script with no answer in time, over a new master or one up: the
        link's failure (as ssh's own 255), not the script's, so a start from
        remembered facts is not taken for stale and waited on again."""
        return PError(f"worker {self.worker.name} did not answer within {timeout:g} s", exit_code=LINK_LOST)

    def explain(self, stderr: str) -> PError:
        """Turn ssh's complaint into one line that says what to do; the exit
        status is ssh's own for a failed connection."""
        return PError(self._reason(stderr), exit_code=LINK_LOST)

    def _reason(self, stderr: str) -> str:
        name, conn = self.worker.name, self.worker.connection
        text = stderr.strip()
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            import shlex

            command = shlex.join(["ssh", *self.user_options, *(["-p", self.port] if self.port else []),
                                  self.target])
            return (f"the host key of {conn} is unknown or has changed; check it with "
                    f"`{command}` and accept it (p never accepts host keys by itself)")
        if "Permission denied" in text or "Too many authentication failures" in text:
            return (f"{conn} refused the SSH login ({_last_line(text)}); "
                    "check your key (ssh-add, IdentityFile) and the user name")
        if "Could not resolve hostname" in text:
            return f"cannot resolve the host of {conn}; check the connection string or your ssh config"
        if any(s in text for s in ("Connection refused", "timed out", "No route to host",
                                   "Network is unreachable", "Connection closed", "Broken pipe")):
            return f"cannot reach worker {name} ({conn}): {_last_line(text)}"
        return f"ssh to worker {name} ({conn}) failed: {_last_line(text) or 'no reason given'}"


def _listening(path: str) -> bool:
    """Whether something accepts connections on unix socket ``path``."""
    import _socket  # not socket: see agent_client

    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else ""
