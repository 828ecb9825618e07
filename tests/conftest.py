"""Fixtures: real sshd workers on loopback and `p` run as a subprocess."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import Screen  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402
from sshd_worker import SshdWorkers, client_env, close_masters  # noqa: E402

P_BIN = shutil.which("p") or "p"

# A suite started in the background by a shell without job control (`cmd &`
# in a script, nohup) inherits SIGINT ignored, and so would every `p` it
# starts: the tests of Ctrl+C would then test nothing but that. Handled
# here, it is the default again in each child.
signal.signal(signal.SIGINT, signal.default_int_handler)


def _path_without(root: Path, missing: str | tuple[str, ...], extra: dict[str, str] | None = None) -> str:
    """A PATH directory with every /usr/bin tool but ``missing``."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for entry in Path("/usr/bin").iterdir():
        if entry.name not in (missing if isinstance(missing, tuple) else (missing,)) \
                and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry)
    for name, text in (extra or {}).items():
        (root / name).write_text(text)
        (root / name).chmod(0o755)
    return str(root)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdWorkers]:
    # Not under pytest's 0700 tmp: the throwaway users must reach their homes.
    root = Path(f"/var/tmp/p-tests-{secrets.token_hex(4)}")
    root.mkdir(mode=0o755)
    restricted = {
        "notmux": _path_without(root / "path-notmux", "tmux"),
        "noslurm": _path_without(root / "path-noslurm", ("sbatch", "squeue")),
        "oddarch": _path_without(root / "path-oddarch", "uname", {
            "uname": '#!/bin/sh\nif [ "$1" = -m ]; then echo mips; else /usr/bin/uname "$@"; fi\n'}),
    }
    # The Slurm login node's user finds the cluster (`slurm` below) by
    # SLURM_CONF, as every login there sets it: nothing under /etc/slurm.
    slurm_env = {"SLURM_CONF": SlurmCluster(str(root / "slurm")).conf}
    workers = SshdWorkers(str(root)).start(["w1", "w2", "w3", "notmux", "oddarch", "noslurm", "login"], restricted,
                                           {"login": slurm_env})
    # A worker whose host key we do not know, one that refuses our key, one down.
    workers.add_alias("stranger", user=workers.workers["w1"].user, known_hosts=str(root / "empty_known_hosts"))
    (root / "empty_known_hosts").write_text("")
    other_key = root / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    workers.add_alias("refused", user=workers.workers["w1"].user, key=str(other_key))
    from sshd_worker import free_port

    workers.add_alias("down", user=workers.workers["w1"].user, port=free_port())
    yield workers
    workers.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm(sshd: SshdWorkers) -> Iterator[SlurmCluster]:
    """A real single-node Slurm cluster, started once for the tests that
    ask for it; sshd's worker ``login`` is its login node."""
    cluster = SlurmCluster(os.path.join(sshd.root, "slurm"))
    os.makedirs(cluster.root, mode=0o755)
    cluster.start()
    yield cluster
    cluster.stop()


class PClient:
    """Runs `p` as a user would, with HOME and the XDG dirs in a temp dir."""

    def __init__(self, home: Path, sshd: SshdWorkers) -> None:
        self.home = home
        self.sshd = sshd
        self.env, self.runtime = client_env(home, "pr")
        self.workdir = home / "project"
        self.workdir.mkdir()

    def __call__(self, *args: str, input: str | None = None, timeout: float = 90,
                 cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([P_BIN, *args], input=input, capture_output=True, text=True,
                                env=self.env, timeout=timeout, cwd=cwd or self.workdir,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"p {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def register(self, alias: str, *extra: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self("worker", "register", alias, "--ssh-config", self.sshd.ssh_config, *extra, check=check)

    def jobs(self) -> list[dict[str, object]]:
        return json.loads(self("ls", "--json", check=True).stdout)

    def worker_home(self, name: str) -> Path:
        return Path(self.sshd.workers[name].home)

    def close_masters(self) -> None:
        """End the SSH masters, as when the client was offline for a while."""
        close_masters(self.runtime)

    def close(self) -> None:
        self.close_masters()
        shutil.rmtree(self.runtime, ignore_errors=True)


@pytest.fixture
def p(tmp_path: Path, sshd: SshdWorkers) -> Iterator[PClient]:
    client = PClient(tmp_path, sshd)
    yield client
    client.close()


@pytest.fixture
def screen(p1: PClient) -> Iterator[Screen]:
    """A client-side tmux to run `p` in, as a person at a terminal would."""
    s = Screen(p1)
    yield s
    s.close()


@pytest.fixture
def p1(p: PClient) -> Iterator[PClient]:
    """A client with worker w1 registered (the default). The workers are
    shared by the whole session: a test that failed half-way must not leave
    a job running there to hold the next tests' slots."""
    p.register("w1", check=True)
    yield p
    result = p("ls", "--json")
    if result.returncode == 0:
        for job in json.loads(result.stdout):
            if job["status"] in ("queued", "pending-approval", "running", "unknown"):
                p("stop", "--grace", "1", str(job["id"]))
