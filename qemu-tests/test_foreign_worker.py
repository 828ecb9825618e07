"""End to end: `p` against a foreign-arch worker that has no Python.

For every foreign architecture a Python-less Debian rootfs runs its own sshd
under qemu-user (see worker.py).  `p` registers it through an ssh_config
alias, must detect its `uname -m`, upload the matching static p-agent and
run jobs there: with and without sync, detached, with logs, stop and ls.
Everything `p` keeps locally lives in a temporary HOME/XDG tree.  As with
ssh, `p -- words...` joins the words with spaces for the worker's shell, so
shell snippets are passed as one word.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, agent_binary, foreign_arches, version
from worker import Worker, processes_in

TIMEOUT = 600.0
pytestmark = [
    pytest.mark.parametrize("foreign_worker", foreign_arches(), indirect=True),
    pytest.mark.timeout(1800),  # sshd, agent and tmux all run under qemu-user
]


@dataclass
class Client:
    """Runs the `p` CLI with a private home and state."""

    home: Path
    worker: Worker
    name: str

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XDG_", "SSH_", "TMUX", "P_", "_PYI", "STATICX"))}
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_RUNTIME_DIR=str(self.home / "run"),
            PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            TERM="dumb",
        )
        return env

    def p(self, *args: str, cwd: Path | None = None, check: bool = True,
          timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "p", *args], cwd=cwd or self.home,
                              env=self.env(), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"p {' '.join(args)} exited {done.returncode}\n"
                        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\n"
                        f"sshd log (tail):\n{self.worker.log.read_text()[-3000:]}")
        return done

    def jobs(self) -> list[dict[str, object]]:
        rows = json.loads(self.p("ls", "--json").stdout)
        assert isinstance(rows, list)
        return rows

    def job(self, job_id: str) -> dict[str, object]:
        for row in self.jobs():
            if str(row["id"]).startswith(job_id) or job_id.startswith(str(row["id"])):
                return row
        raise AssertionError(f"job {job_id} not in `p ls --json`")


@pytest.fixture(scope="module")
def client(foreign_worker: Worker) -> Iterator[Client]:
    # A short HOME: ssh's ControlPath socket lives under XDG_RUNTIME_DIR and
    # unix socket paths are limited to 108 bytes; pytest's tmp paths are long.
    home = Path(tempfile.mkdtemp(prefix=f"pc-{foreign_worker.arch[:2]}-"))
    try:
        for sub in (".config", ".local/share", ".cache", "run"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "run").chmod(0o700)
        client = Client(home=home, worker=foreign_worker, name=f"qemu-{foreign_worker.arch}")
        client.registration = client.p(  # type: ignore[attr-defined]
            "worker", "register", foreign_worker.alias, "-n", client.name,
            "--ssh-config", str(foreign_worker.ssh_config))
        yield client
    finally:
        shutil.rmtree(home, ignore_errors=True)


def installed_agent(worker: Worker) -> Path:
    return worker.root / "root" / ".p" / "bin" / f"p-agent-{version()}"


def test_worker_has_no_python(foreign_worker: Worker) -> None:
    done = foreign_worker.ssh("uname -m; command -v python3 python || echo no-python")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [foreign_worker.arch, "no-python"]


def test_register_detects_arch_and_installs_agent(client: Client) -> None:
    out = client.registration.stdout + client.registration.stderr  # type: ignore[attr-defined]
    assert client.worker.arch in out, out
    listing = client.p("worker", "ls").stdout
    assert client.name in listing
    # The binary on the worker is exactly the one built for its arch.
    binary = installed_agent(client.worker)
    assert binary.is_file(), f"no agent at {binary}"
    want = hashlib.sha256(agent_binary(client.worker.arch).read_bytes()).hexdigest()
    assert hashlib.sha256(binary.read_bytes()).hexdigest() == want


def test_run_without_sync_prints_worker_arch(client: Client) -> None:
    done = client.p("-n", "--", "uname", "-m")
    assert done.stdout.strip().splitlines()[-1] == client.worker.arch


def test_exit_status_is_the_jobs(client: Client) -> None:
    done = client.p("-n", "--", "echo out; exit 7", check=False)
    assert done.returncode == 7, done.stderr
    assert "out" in done.stdout


def test_second_run_uploads_nothing(client: Client) -> None:
    binary = installed_agent(client.worker)
    before = binary.stat()
    client.p("-n", "--", "true")
    after = binary.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_restarted_agent_runs_unpacked(client: Client) -> None:
    """The binary's first start left an unpacked copy; once the agent has
    gone (idle exit, reboot), the next start runs that copy."""
    sha256 = hashlib.sha256(agent_binary(client.worker.arch).read_bytes()).hexdigest()
    lib = client.worker.root / "root" / ".p" / "lib" / sha256[:16]
    assert (lib / ".complete").read_text().strip() == sha256
    pidfile = client.worker.root / "root" / ".p" / "run" / f"agent-{version()}.pid"
    first = int(pidfile.read_text())
    client.worker.ssh(f"kill {first}")
    done = client.p("-n", "--", "echo back")
    assert done.stdout.strip().splitlines()[-1] == "back"
    again = int(pidfile.read_text())
    assert again != first
    ps = client.worker.ssh(f"cat /proc/{again}/cmdline | tr '\\0' ' '")
    assert f"/.p/lib/{sha256[:16]}/p-agent serve" in ps.stdout, ps.stdout


def test_run_with_sync(client: Client, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.txt").write_text("synced-payload\n")
    (project / "ignored.txt").write_text("must not be synced\n")
    (project / ".gitignore").write_text("ignored.txt\n")
    done = client.p("--", "cat data.txt; test -e ignored.txt && echo LEAK; uname -m", cwd=project)
    assert "synced-payload" in done.stdout
    assert "LEAK" not in done.stdout
    assert done.stdout.strip().splitlines()[-1] == client.worker.arch


def test_detached_job_logs_stop_ls(client: Client) -> None:
    done = client.p("-n", "-d", "--", "echo started-$((40+2)); sleep 600")
    job_id = done.stdout.strip().split()[-1]
    assert len(job_id) >= 8, done.stdout

    deadline = time.monotonic() + 300
    logs = ""
    while time.monotonic() < deadline:
        logs = client.p("logs", job_id).stdout
        if "started-42" in logs:
            break
        time.sleep(2)
    assert "started-42" in logs

    row = client.job(job_id)
    assert row["worker"] == client.name
    assert row["status"] == "running"
    assert "sleep 600" in str(row["command"])

    client.p("stop", job_id)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        row = client.job(job_id)
        if row["status"] != "running":
            break
        time.sleep(2)
    assert row["status"] != "running"
    # Nothing of the job is left running on the worker (its chroot: the
    # host's other processes are not the worker's).
    left = []
    for pid in processes_in(client.worker.root):
        with contextlib.suppress(OSError):
            left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
    assert not [args for args in left if b"sleep 600" in args], left
