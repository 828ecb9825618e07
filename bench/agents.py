"""Benchmark of the static p-agent binaries (run as root after `make agents`).

    sudo python3 bench/agents.py [arch...] [--runs N] [--no-worker]

Per arch it reports:
* the binary's size;
* start-up time of `p-agent version`: the static binary vs `python3 -m
  p_agent version` from source, both inside the arch's build rootfs (so both
  run under qemu-user for foreign arches; x86_64 runs on the host);
* agent bytes uploaded by a second `p` run against the same worker (goal 0),
  using the Python-less test worker of qemu-tests/worker.py (foreign arches).

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


def timed(cmd: list[str], env: dict[str, str] | None = None, runs: int = 3) -> float:
    samples = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
        samples.append(time.monotonic() - start)
    return statistics.median(samples)


def startup_times(arch: str, binary: Path, runs: int) -> tuple[float, float]:
    """(static binary, python3 from source) median seconds for `version`."""
    if arch == HOST:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, TMPDIR=tmp)
            static = timed([str(binary), "version"], env, runs)
            env["PYTHONPATH"] = f"{REPO / 'agent'}{os.pathsep}{REPO}"
            source = timed([sys.executable, "-m", "p_agent", "version"], env, runs)
        return static, source
    root = CACHE / "rootfs" / arch
    if not (root / "usr" / "bin" / "python3").exists():
        raise SystemExit(f"{root} missing: run `make agents` first")
    bench = root / "opt" / "p-build" / "bench"
    shutil.rmtree(bench, ignore_errors=True)
    (bench / "tmp").mkdir(parents=True)
    shutil.copy2(binary, bench / "p-agent")
    shutil.copytree(REPO / "agent" / "p_agent", bench / "src" / "p_agent")
    shutil.copytree(REPO / "p_protocol", bench / "src" / "p_protocol")
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": "/opt/p-build/bench/tmp", "LANG": "C.UTF-8"}
        static = timed(["chroot", str(root), "/opt/p-build/bench/p-agent", "version"], env, runs)
        env["PYTHONPATH"] = "/opt/p-build/bench/src"
        source = timed(["chroot", str(root), "python3", "-m", "p_agent", "version"], env, runs)
    finally:
        subprocess.run(["umount", str(root / "proc")], check=False)
        shutil.rmtree(bench, ignore_errors=True)
    return static, source


def second_run_upload(arch: str) -> int:
    """Agent bytes uploaded by the second of two `p` runs (0 when the worker
    already has this exact build: same inode and mtime of the agent file)."""
    from worker import start_worker

    version = json.loads((AGENTS / "manifest.json").read_text())["version"]
    home = Path(tempfile.mkdtemp(prefix="pb-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "SSH_"))}
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "c"), XDG_DATA_HOME=str(home / "d"),
                   XDG_CACHE_HOME=str(home / "k"), XDG_RUNTIME_DIR=str(home / "r"),
                   PYTHONPATH=str(REPO))
        (home / "r").mkdir(mode=0o700)

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arches", nargs="*", default=["x86_64", "aarch64", "riscv64"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-worker", action="store_true", help="skip the second-run upload measure")
    args = parser.parse_args()
    manifest = json.loads((AGENTS / "manifest.json").read_text())
    print(f"{'arch':8} {'size':>10} {'static start':>13} {'python3 start':>14} {'2nd-run upload':>15}")
    for arch in args.arches:
        entry = manifest["agents"][arch]
        binary = AGENTS / entry["file"]
        static, source = startup_times(arch, binary, args.runs)
        upload = "n/a" if args.no_worker or arch == HOST else f"{second_run_upload(arch)} B"
        print(f"{arch:8} {entry['size'] / 1e6:8.1f}MB {static:12.2f}s {source:13.2f}s {upload:>15}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
