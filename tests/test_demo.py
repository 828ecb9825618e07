"""`make demo` and `make demo-stop`, as a normal user and as root.

The demo runs from a copy of this checkout with p installed in a venv of a
Python every user can run (the test's own may live under /root).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"  # no sbin: useradd and sshd are not on it


@pytest.fixture(scope="module")
def demo_checkout() -> Iterator[tuple[Path, Path]]:
    root = Path(f"/var/tmp/p-demo-test-{secrets.token_hex(4)}")
    src, venv = root / "src", root / "venv"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    python = shutil.which("python3", path=USER_PATH) or sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)], check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    yield src, venv
    shutil.rmtree(root, ignore_errors=True)


def make(src: Path, venv: Path, target: str, env: dict[str, str],
         user: str | None = None) -> subprocess.CompletedProcess[str]:
    as_user = ["runuser", "-u", user, "--"] if user else []
    # -o: p is installed in that venv already; make must not reinstall it.
    return subprocess.run([*as_user, "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           "make", "-s", "-C", str(src), "-o", f"{venv}/bin/p", target, f"VENV={venv}"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def live_processes(*ps_args: str) -> list[str]:
    """Processes (not zombies nobody reaped) as `ps ps_args` lists them."""
    out = subprocess.run(["ps", *ps_args, "-o", "stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if not line.lstrip().startswith("Z")]


def test_demo_works_for_a_normal_user_and_stops_entirely(demo_checkout: tuple[Path, Path]) -> None:
    src, venv = demo_checkout
    user = f"pd{secrets.token_hex(4)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], check=True)
    try:
        home = subprocess.run(["getent", "passwd", user], capture_output=True, text=True).stdout.split(":")[5]
        uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True).stdout)
        env = {"HOME": home, "PATH": USER_PATH, "LANG": "C.UTF-8"}
        started = make(src, venv, "demo", env, user)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "test 3 ok" in started.stdout and "done [0]" in started.stdout
        assert live_processes("-u", user)  # the demo worker runs under the user's own account
        stopped = make(src, venv, "demo-stop", env, user)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        # Nothing left running: sshd, SSH master, agent, tmux; nor p's runtime dir.
        assert live_processes("-u", user) == []
        assert not Path(f"/tmp/p-{uid}").exists()
    finally:
        subprocess.run(["pkill", "-KILL", "-u", user], stderr=subprocess.DEVNULL)
        subprocess.run(["userdel", "-r", "-f", user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_demo_as_root_works_as_an_unprivileged_worker(demo_checkout: tuple[Path, Path], tmp_path: Path) -> None:
    src, venv = demo_checkout
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime), "PATH": ROOT_PATH, "LANG": "C.UTF-8"}
    started = make(src, venv, "demo", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "test 3 ok" in started.stdout
        who = subprocess.run([str(venv / "bin" / "p"), "demo", "-n", "--", "id -un"], env=env,
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        worker_user = who.stdout.strip()
        assert who.returncode == 0 and worker_user and worker_user != "root", who
    finally:
        stopped = make(src, venv, "demo-stop", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert subprocess.run(["id", worker_user], capture_output=True).returncode != 0  # removed
    assert [line for line in live_processes("-e") if "/var/tmp/p-demo/" in line] == []
    assert not (runtime / "p").exists()
