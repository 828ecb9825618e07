"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import PClient


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failed `p` must say one line on stderr, no traceback."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("p: ")
    return lines[0]


def eventually(check: Callable[[], object], timeout: float = 20.0, interval: float = 0.1,
               explain: Callable[[], str] | None = None) -> object:
    """``check()`` once it is true; ``explain()`` says what was seen if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f": {explain()}" if explain is not None else ""
            raise AssertionError(f"condition not met within {timeout}s{seen}")
        time.sleep(interval)


def job_dir(worker_home: Path, job_id: str) -> Path:
    return worker_home / ".p" / "jobs" / job_id


def workdir(worker_home: Path, job_id: str) -> Path:
    return worker_home / ".p" / "workdirs" / job_id


def worker_sessions(p: PClient, worker: str) -> set[str]:
    """The tmux sessions of the worker's agent, asked as the worker's user."""
    spec = p.sshd.workers[worker]
    sock = Path(spec.home) / ".p" / "run" / "tmux.sock"
    result = subprocess.run(["runuser", "-u", spec.user, "--", "tmux", "-S", str(sock), "list-sessions",
                             "-F", "#{session_name}"], capture_output=True, text=True)
    return set(result.stdout.split())


def master_pids(p: PClient, socket: Path | None = None) -> list[int]:
    """The pids of the client's SSH masters, or of the one listening on
    ``socket``. A master started alone (-N -f) keeps its argv; one whose
    first session ran a script (ControlPersist's background) is titled
    `ssh: <socket> [mux]`."""
    where = re.escape(str(socket)) if socket else re.escape(str(p.runtime / "p")) + "/cm-[0-9a-f]+"
    pattern = f"ControlPath={where} .*ControlMaster=yes|^ssh: {where} \\[mux\\]$"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def worker_processes(p: PClient, worker: str, pattern: str) -> list[str]:
    """Command lines of the worker user's processes that mention ``pattern``."""
    out = subprocess.run(["ps", "-u", p.sshd.workers[worker].user, "-o", "args="], capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines() if pattern in line]


class Screen:
    """A client-side tmux server with one window per command."""

    def __init__(self, p: PClient) -> None:
        self.p = p
        self.socket = str(p.runtime / "client-tmux.sock")
        self.windows = 0

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=True).stdout

    def start(self, *p_args: str, term: str = "xterm-256color") -> str:
        """Run `p p_args` in a new window; it prints p's exit status after."""
        from conftest import P_BIN  # conftest imports this module
        script = self.p.home / f"window{self.windows}.sh"
        exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in self.p.env.items()
                          if key in ("HOME", "PATH") or key.startswith("XDG_"))  # as client_env set them
        script.write_text(f"{exports}export TERM={term}\ncd {shlex.quote(str(self.p.workdir))}\n"
                          f"{shlex.join([P_BIN, *p_args])}\necho \"p-exit=$?\"\nsleep 600\n")
        name = f"w{self.windows}"
        self.windows += 1
        if self.windows == 1:
            self.tmux("new-session", "-d", "-s", "client", "-n", name, "-x", "160", "-y", "40", "sh", str(script))
        else:
            self.tmux("new-window", "-t", "client", "-n", name, "sh", str(script))
        return f"client:{name}"

    def text(self, target: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", target)

    def wait_for(self, target: str, pattern: str, timeout: float = 30) -> str:
        return str(eventually(lambda: re.search(pattern, self.text(target), re.MULTILINE)
                              and self.text(target), timeout=timeout))

    def keys(self, target: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", target, *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
