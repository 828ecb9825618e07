"""`make demo` and `make demo-stop`, as a normal user and as root.

The demo runs from a copy of this checkout with p installed in a venv of a
Python every user can run (the test's own may live under /root).
"""

from __future__ import annotations

import importlib.util
import os
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


def root_state_dir() -> Path:
    """Where the demo keeps its state as root, as tools/demo.py says."""
    spec = importlib.util.spec_from_file_location("p_demo_tool", REPO / "tools" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return Path(demo.state_dir())


@pytest.fixture(autouse=True)
def one_demo_at_a_time() -> Iterator[None]:
    """As root the demo keeps its state in one place for the whole machine
    (/var/lib/p-demo), as it should: two test runs at once on one machine
    take turns here instead of stopping each other's demo."""
    import fcntl

    if os.getuid() != 0:
        yield
        return
    lock = os.open("/var/lib/p-demo-tests.lock", os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


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


def new_user() -> str:
    user = f"pd{secrets.token_hex(4)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], check=True)
    return user


def remove_user(user: str) -> None:
    subprocess.run(["pkill", "-KILL", "-u", user], stderr=subprocess.DEVNULL)
    subprocess.run(["userdel", "-r", "-f", user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def root_env(tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime), "PATH": ROOT_PATH, "LANG": "C.UTF-8"}


def test_demo_works_for_a_normal_user_and_stops_entirely(demo_checkout: tuple[Path, Path]) -> None:
    src, venv = demo_checkout
    user = new_user()
    uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True).stdout)
    runtime = Path(f"/tmp/p-{uid}")
    shutil.rmtree(runtime, ignore_errors=True)  # a removed user of the same uid may have left it
    try:
        home = subprocess.run(["getent", "passwd", user], capture_output=True, text=True).stdout.split(":")[5]
        env = {"HOME": home, "PATH": USER_PATH, "LANG": "C.UTF-8"}
        started = make(src, venv, "demo", env, user)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "test 3 ok" in started.stdout and "done [0]" in started.stdout
        assert live_processes("-u", user)  # the demo worker runs under the user's own account
        stopped = make(src, venv, "demo-stop", env, user)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        # Nothing left running: sshd, SSH master, agent, tmux; nor p's runtime dir.
        assert live_processes("-u", user) == []
        assert not runtime.exists()
    finally:
        remove_user(user)
        shutil.rmtree(runtime, ignore_errors=True)


def test_demo_as_root_works_as_an_unprivileged_worker(demo_checkout: tuple[Path, Path], tmp_path: Path) -> None:
    src, venv = demo_checkout
    env = root_env(tmp_path)
    state = root_state_dir()
    started = make(src, venv, "demo", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "test 3 ok" in started.stdout
        who = subprocess.run([str(venv / "bin" / "p"), "demo", "-n", "--", "id -un"], env=env,
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        worker_user = who.stdout.strip()
        assert who.returncode == 0 and worker_user and worker_user != "root", who
        # The demo's key opens its throwaway user, never root.
        as_root = subprocess.run(["ssh", "-F", str(state / "ssh_config"), "-o", "BatchMode=yes", "-l", "root",
                                  "p-demo", "id -un"], capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL)
        assert as_root.returncode != 0 and "root" not in as_root.stdout, as_root
    finally:
        stopped = make(src, venv, "demo-stop", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert subprocess.run(["id", worker_user], capture_output=True).returncode != 0  # removed
    assert [line for line in live_processes("-e") if f"{state}/" in line] == []
    assert not (Path(env["XDG_RUNTIME_DIR"]) / "p").exists()


@pytest.mark.parametrize("made_by", ["another user", "a symlink", "writable by all"])
def test_demo_as_root_refuses_a_state_directory_someone_else_could_have_filled(
        demo_checkout: tuple[Path, Path], tmp_path: Path, made_by: str) -> None:
    src, venv = demo_checkout
    state = root_state_dir()
    assert make(src, venv, "demo-stop", root_env(tmp_path)).returncode == 0
    shutil.rmtree(state, ignore_errors=True)
    user = new_user()
    elsewhere = tmp_path / "elsewhere"
    try:
        if made_by == "another user":
            state.mkdir(mode=0o755)
            shutil.chown(state, user)
            subprocess.run(["runuser", "-u", user, "--", "ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                            "-f", str(state / "client_key")], check=True)
        elif made_by == "a symlink":
            elsewhere.mkdir(mode=0o755)
            state.symlink_to(elsewhere)
        else:
            state.mkdir()
            state.chmod(0o777)
        planted = sorted(os.listdir(state))
        result = make(src, venv, "demo", root_env(tmp_path))
        assert result.returncode != 0, result.stdout + result.stderr
        said = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("make")]
        assert len(said) == 1 and said[0].startswith("p: ") and str(state) in said[0], result.stderr
        assert sorted(os.listdir(state)) == planted  # nothing written there, no key trusted
        assert [line for line in live_processes("-e") if f"{state}/" in line] == []
        stopped = make(src, venv, "demo-stop", root_env(tmp_path))
        assert stopped.returncode != 0 and str(state) in stopped.stderr, stopped.stderr
        # Nor can anyone but root make it before root does.
        assert not os.lstat(state.parent).st_mode & 0o002, f"{state.parent} is world-writable"
    finally:
        if state.is_symlink():
            state.unlink()
        shutil.rmtree(state, ignore_errors=True)
        remove_user(user)


def test_demo_stop_as_root_signals_only_its_sshd_and_removes_only_its_users(
        demo_checkout: tuple[Path, Path], tmp_path: Path) -> None:
    src, venv = demo_checkout
    state = root_state_dir()
    env = root_env(tmp_path)
    assert make(src, venv, "demo-stop", env).returncode == 0
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(mode=0o755)
    user = new_user()  # not a name the demo makes
    bystander = subprocess.Popen(["sleep", "300"])  # e.g. what got the pid of a sshd gone since a reboot
    users_process = subprocess.Popen(["runuser", "-u", user, "--", "sleep", "300"])
    try:
        (state / "sshd.pid").write_text(f"{bystander.pid}\n")
        (state / "users").write_text(f"{user}\n")
        stopped = make(src, venv, "demo-stop", env)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert bystander.poll() is None and users_process.poll() is None
        assert subprocess.run(["id", user], capture_output=True).returncode == 0
        assert not (state / "sshd.pid").exists() and not (state / "users").exists()
    finally:
        bystander.kill()
        remove_user(user)
        users_process.kill()
        shutil.rmtree(state, ignore_errors=True)
