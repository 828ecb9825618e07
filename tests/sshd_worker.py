"""Real sshd workers on loopback for the tests and `make demo`.

One sshd with its own host key and config listens on a random loopback port.
As root, each worker is a throwaway user (so each has its own ~/.p); as an
ordinary user, sshd can only log in as that user, so workers share its home.
The client side gets an ssh_config naming every worker as a Host alias, with
its own key and known_hosts: nothing of the user's ~/.ssh is read or changed.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", "")) or "/usr/sbin/sshd"
# The names `start` gives the users it makes. Whatever else a list of users
# says (a file someone else wrote, a typo), it is never killed or deleted.
THROWAWAY_USER = re.compile(r"pt[0-9a-f]{8}")


class UnsafeDirectory(Exception):
    """A state directory that someone else could have filled."""


def private_dir(path: str) -> None:
    """``path`` as a directory only we can write: made now, or checked.

    Its keys, config and pid file are trusted (as root: a login, signals,
    deleted users), so one that another user made first is refused.
    """
    try:
        os.makedirs(path, mode=0o700)  # closed until it is ours for certain
    except FileExistsError:
        check_private_dir(path)
    os.chmod(path, 0o755)  # the throwaway users reach their homes through it


def check_private_dir(path: str) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = "is a symlink" if stat.S_ISLNK(info.st_mode) else "is not a directory"
    elif info.st_uid != os.getuid():
        try:
            owner = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            owner = f"uid {info.st_uid}"
        problem = f"belongs to {owner}"
    elif info.st_mode & 0o022:
        problem = "is writable by others"
    else:
        return
    raise UnsafeDirectory(f"{path} {problem}, so what it holds may not be ours; remove it and try again")


def kill_users(users: Iterable[str]) -> None:
    for user in users:
        if THROWAWAY_USER.fullmatch(user):
            subprocess.run(["pkill", "-KILL", "-u", user], stderr=subprocess.DEVNULL)


def delete_users(users: Iterable[str]) -> None:
    for user in users:
        if THROWAWAY_USER.fullmatch(user):
            subprocess.run(["userdel", "-r", "-f", user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def add_user(user: str, home: str) -> None:
    """A throwaway user. useradd fails while another holds /etc/passwd's
    lock (other test runs on the machine): tried again, briefly."""
    for attempt in range(20):
        result = subprocess.run(["useradd", "-m", "-p", "*", "-d", home, "-s", "/bin/bash", user],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode == 0:
            return
        if "lock" not in result.stderr or attempt == 19:
            raise RuntimeError(f"useradd {user}: {result.stderr.strip()}")
        time.sleep(0.25)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: each is held while the next is
    chosen (ports chosen one by one may come out the same)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def client_env(home: Path, prefix: str) -> tuple[dict[str, str], Path]:
    """The environment of a `p` client living in ``home`` (HOME and the XDG
    dirs there, nothing of the caller's ssh-agent), and its runtime dir,
    private and kept short under /tmp: the masters' sockets live there, and
    a socket's path must fit in 108 bytes."""
    runtime = Path(f"/tmp/{prefix}-{secrets.token_hex(4)}")
    runtime.mkdir(mode=0o700)
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(("XDG_", "SSH_"))}
    return {**inherited, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_RUNTIME_DIR": str(runtime)}, runtime


def close_masters(runtime: Path) -> None:
    """End a client's SSH masters, as when it was offline for a while."""
    for master in runtime.glob("p/cm-*"):
        subprocess.run(["ssh", "-o", f"ControlPath={master}", "-O", "exit", "x"], capture_output=True, timeout=10)


def keygen(path: str) -> str:
    """A new key pair at ``path``: one found there may be someone else's."""
    for old in (path, path + ".pub"):
        if os.path.lexists(old):
            os.unlink(old)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    with open(path + ".pub") as pub:
        return pub.read().strip()


def host_entry(alias: str, *, key: str, known_hosts: str, port: int | None = None, user: str = "",
               extra: str = "") -> str:
    """One ssh_config Host entry for a loopback worker: its own key and
    pinned host key, nothing of the user's. ``port``/``user`` None or empty:
    left to the command line (user@host:port)."""
    port_line = f"    Port {port}\n" if port else ""
    user_line = f"    User {user}\n" if user else ""
    return f"""\
Host {alias}
    HostName 127.0.0.1
{port_line}{user_line}    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    LogLevel ERROR
{extra}
"""


def wait_for_sshd(port: int, process: subprocess.Popen[bytes], seconds: float, log: str = "") -> None:
    """Until the sshd on ``port`` sends its banner; one line naming why not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.settimeout(30)
                if conn.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on port {port}: {log}")


@dataclass
class WorkerSpec:
    alias: str
    user: str
    home: str


@dataclass
class SshdWorkers:
    """Start with `start(root, names)`; `ssh_config` names each worker."""

    root: str
    port: int = 0
    workers: dict[str, WorkerSpec] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    created_users: list[str] = field(default_factory=list)
    extra_sshd_config: str = ""

    @property
    def ssh_config(self) -> str:
        return os.path.join(self.root, "ssh_config")

    @property
    def client_key(self) -> str:
        return os.path.join(self.root, "client_key")

    @property
    def sshd_config(self) -> str:
        return os.path.join(self.root, "sshd_config")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.root, "sshd.pid")

    def running_pid(self) -> int | None:
        """The pid in the pid file if it is this sshd's: after a reboot, or
        a crash, it may be any process's."""
        try:
            with open(self.pid_file) as src:
                pid = int(src.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as src:
                cmdline = src.read().replace(b"\0", b" ").decode(errors="replace")
            owner = os.stat(f"/proc/{pid}").st_uid
        except (OSError, ValueError):
            return None
        # sshd may retitle itself, but keeps its arguments in the title.
        ours = owner == os.getuid() and f" -f {self.sshd_config} " in f" {cmdline} "
        return pid if ours else None

    def start(self, names: list[str], restricted: dict[str, str] | None = None,
              environment: dict[str, dict[str, str]] | None = None) -> SshdWorkers:
        """``restricted`` maps a worker name to a PATH its sessions get,
        ``environment`` to other variables they get."""
        private_dir(self.root)
        host_key = os.path.join(self.root, "host_key")
        host_pub = keygen(host_key)
        client_pub = keygen(self.client_key)
        authorized = os.path.join(self.root, "authorized_keys")
        with open(authorized, "w") as out:
            out.write(client_pub + "\n")
        os.chmod(authorized, 0o644)
        self.port = free_port()
        for name in names:
            if os.getuid() == 0:
                user = f"pt{secrets.token_hex(4)}"
                home = os.path.join(self.root, "home", user)
                os.makedirs(os.path.dirname(home), mode=0o755, exist_ok=True)
                add_user(user, home)
                self.created_users.append(user)
            else:
                entry = pwd.getpwuid(os.getuid())
                user, home = entry.pw_name, entry.pw_dir
            self.workers[name] = WorkerSpec(name, user, home)
        settings = {name: {"PATH": path} for name, path in (restricted or {}).items()}
        for name, variables in (environment or {}).items():
            settings.setdefault(name, {}).update(variables)
        matches = ""
        for name, variables in settings.items():
            pairs = " ".join(f"{key}={value}" for key, value in variables.items())
            matches += f"\nMatch User {self.workers[name].user}\n    SetEnv {pairs}\n"
        config = self.sshd_config
        with open(config, "w") as out:
            out.write(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {self.pid_file}
AuthorizedKeysFile {authorized}
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowStreamLocalForwarding yes
AllowTcpForwarding yes
UsePAM no
PrintMotd no
LogLevel ERROR
MaxSessions 200
MaxStartups 200
{self.extra_sshd_config}{matches}""")
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        known_hosts = os.path.join(self.root, "known_hosts")
        with open(known_hosts, "w") as out:
            out.write(f"[127.0.0.1]:{self.port} {host_pub}\n")
        with open(self.ssh_config, "w") as out:
            for spec in self.workers.values():
                out.write(self.host_block(spec.alias, spec.user))
            # For user@127.0.0.1:port targets: the same key and known hosts.
            out.write(self.host_block("127.0.0.1", "", port=0))
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_for_sshd(self.port, self.process, 10)
        return self

    def host_block(self, alias: str, user: str, *, port: int | None = None, known_hosts: str | None = None,
                   key: str | None = None) -> str:
        # port=0 / user="": leave them to the command line (user@host:port).
        return host_entry(alias, key=key or self.client_key, port=self.port if port is None else port, user=user,
                          known_hosts=known_hosts or os.path.join(self.root, "known_hosts"))

    def add_alias(self, alias: str, **kwargs: object) -> None:
        """Another Host entry (e.g. a wrong key or an unknown host key)."""
        with open(self.ssh_config, "a") as out:
            out.write(self.host_block(alias, **kwargs))  # type: ignore[arg-type]

    def stop(self) -> None:
        kill_users(self.created_users)
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
        delete_users(self.created_users)
