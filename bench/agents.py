"""Benchmark of the static p-agent binaries (run as root after `make agents`).

    sudo python3 bench/agents.py [arch...] [--runs N] [--no-worker]

Per arch it reports:
* the binary's size;
* start-up time of `p-agent version`: the static binary (a worker's first
  start), the agent it unpacks (every later start) and `python3 -m p_agent
  version` from source, all inside the arch's build rootfs (so under
  qemu-user for foreign arches; x86_64 runs on the host); goal: unpacked
  / python3 <= 2;
* agent bytes uploaded by a second `p` run against the same worker (goal 0),
  using the Python-less test worker of qemu-tests/worker.py (foreign arches).
Then, on a loopback worker of this host's arch: `p -n -- true` right after
the agent was stopped / with the agent running.

Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGENTS = REPO / "p" / "agents"
CACHE = Path(os.environ.get("P_BUILD_CACHE", "/var/cache/p-build"))
HOST = platform.machine()
sys.path.insert(0, str(REPO / "qemu-tests"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from sshd_worker import client_env  # noqa: E402

from p_protocol.platforms import ARCHES  # noqa: E402


def timed(cmd: list[str], env: dict[str, str] | None = None, runs: int = 3) -> float:
    samples = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
        samples.append(time.monotonic() - start)
    return statistics.median(samples)


def startup_times(arch: str, binary: Path, sha256: str, runs: int) -> tuple[float, float, float]:
    """Median seconds of `version` for (the static binary, the agent it
    unpacks on a worker's first start, python3 -m p_agent from source), in
    the arch's build rootfs (so all three run under qemu-user for foreign
    arches; x86_64 runs on the host)."""
    if arch == HOST:
        root, inside = Path("/"), Path(tempfile.mkdtemp(prefix="pb-agent-"))
        prefix: list[str] = []
        python = sys.executable
    else:
        root = CACHE / "rootfs" / arch
        if not (root / "usr" / "bin" / "python3").exists():
            raise SystemExit(f"{root} missing: run `make agents` first")
        inside = Path("/opt/p-build/bench")
        prefix, python = ["chroot", str(root)], "python3"
    bench = root / inside.relative_to("/")
    shutil.rmtree(bench, ignore_errors=True)
    (bench / "home" / ".p" / "tmp").mkdir(parents=True)
    shutil.copy2(binary, bench / "p-agent")
    shutil.copytree(REPO / "agent" / "p_agent", bench / "src" / "p_agent")
    shutil.copytree(REPO / "p_protocol", bench / "src" / "p_protocol")
    if prefix:
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    version = json.loads((AGENTS / "manifest.json").read_text())["version"]
    pidfile = bench / "home" / ".p" / "run" / f"agent-{version}.pid"
    try:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(inside / "home"), "LANG": "C.UTF-8",
               "TMPDIR": str(inside / "home" / ".p" / "tmp")}
        static = timed([*prefix, str(inside / "p-agent"), "version"], env, runs)
        lib = inside / "home" / ".p" / "lib" / sha256[:16]
        subprocess.run([*prefix, str(inside / "p-agent"), "serve", "--detach", "--unpack-to", str(lib),
                        "--sha256", sha256], env=env, check=True, capture_output=True, timeout=600)
        os.kill(int(pidfile.read_text()), 15)
        unpacked = timed([*prefix, str(lib / "p-agent"), "version"], env, runs)
        env["PYTHONPATH"] = str(inside / "src")
        source = timed([*prefix, python, "-m", "p_agent", "version"], env, runs)
    finally:
        if prefix:
            subprocess.run(["umount", str(root / "proc")], check=False)
        shutil.rmtree(bench, ignore_errors=True)
    return static, unpacked, source


def agent_restart(runs: int) -> tuple[float, float]:
    """Median seconds of `p -n -- true` right after the worker's agent was
    stopped (the agent starts again, unpacked) and with it running, against
    the tests' loopback sshd worker (this host's arch)."""
    from sshd_worker import SshdWorkers

    root = Path(tempfile.mkdtemp(prefix="pb-sshd-", dir="/var/tmp"))
    root.chmod(0o755)
    home = Path(tempfile.mkdtemp(prefix="pb-home-"))
    sshd = SshdWorkers(str(root)).start(["w1"])
    env, runtime = client_env(home, "pb")
    env["PYTHONPATH"] = str(REPO)
    try:
        p = [sys.executable, "-m", "p"]
        subprocess.run([*p, "worker", "register", "w1", "--ssh-config", sshd.ssh_config], env=env, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=600)
        run = [*p, "-n", "--", "true"]
        timed(run, env, 1)
        pidfiles = Path(sshd.workers["w1"].home, ".p", "run")
        cold, warm = [], []
        for _ in range(runs):
            for pidfile in pidfiles.glob("agent-*.pid"):
                os.kill(int(pidfile.read_text()), 15)
            time.sleep(0.5)
            cold.append(timed(run, env, 1))
            warm.append(timed(run, env, 1))
        return statistics.median(cold), statistics.median(warm)
    finally:
        subprocess.run(["pkill", "-u", sshd.workers["w1"].user], capture_output=True)
        sshd.stop()
        for path in (root, home, runtime):
            shutil.rmtree(path, ignore_errors=True)


def second_run_upload(arch: str) -> int:
    """Agent bytes uploaded by the second of two `p` runs (0 when the worker
    already has this exact build: same inode and mtime of the agent file)."""
    from worker import start_worker

    version = json.loads((AGENTS / "manifest.json").read_text())["version"]
    home = Path(tempfile.mkdtemp(prefix="pb-"))
    env, runtime = client_env(home, "pb")
    env["PYTHONPATH"] = str(REPO)
    try:
        def p(*args: str) -> None:
            subprocess.run([sys.executable, "-m", "p", *args], env=env, cwd=home, check=True,
                           capture_output=True, timeout=600, stdin=subprocess.DEVNULL)

        with tempfile.TemporaryDirectory() as scratch, start_worker(arch, Path(scratch)) as worker:
            p("worker", "register", worker.alias, "-n", "bench", "--ssh-config", str(worker.ssh_config))
            agent = worker.root / "root" / ".p" / "bin" / f"p-agent-{version}"
            p("-n", "--", "true")
            before = agent.stat()
            p("-n", "--", "true")
            after = agent.stat()
            same = (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
            return 0 if same else after.st_size
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arches", nargs="*", default=list(ARCHES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-worker", action="store_true", help="skip the second-run upload measure")
    args = parser.parse_args()
    try:
        manifest = json.loads((AGENTS / "manifest.json").read_text())
    except (OSError, ValueError):
        print("bench/agents.py: no built agents (p/agents/manifest.json); `make agents` first")
        return 0
    if os.geteuid() != 0:
        print("bench/agents.py: needs root (it runs the agents in their build rootfs); skipped")
        return 0
    from p.artifacts import sources_digest

    if manifest.get("agent_sources") != sources_digest():
        print("bench/agents.py: the built agents are stale (the agent's sources changed); `make agents` first")
        return 0
    print(f"{'arch':8} {'size':>8} {'first start':>12} {'unpacked':>9} {'python3':>8} "
          f"{'unpacked/python3 (goal <= 2)':>29} {'2nd-run upload':>15}")
    for arch in args.arches:
        entry = manifest["agents"].get(arch)
        if entry is None:
            print(f"{arch:8} not built: `make agents`", flush=True)
            continue
        binary = AGENTS / entry["file"]
        static, unpacked, source = startup_times(arch, binary, entry["sha256"], args.runs)
        upload = "n/a" if args.no_worker or arch == HOST else f"{second_run_upload(arch)} B"
        ratio = unpacked / source
        print(f"{arch:8} {entry['size'] / 1e6:6.1f}MB {static:11.3f}s {unpacked:8.3f}s {source:7.3f}s "
              f"{ratio:22.2f} {'met' if ratio <= 2 else 'NOT met':>6} {upload:>15}", flush=True)
    if not args.no_worker:
        cold, warm = agent_restart(args.runs)
        print(f"p -n -- true after the agent stopped / with it running: {cold / warm:.2f} "
              f"({cold * 1000:.0f} ms vs {warm * 1000:.0f} ms; the restart adds a probe and a start over ssh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
