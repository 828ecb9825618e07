"""`make demo`: a private local worker, registered, with a sample job.

Starts an sshd of its own on a loopback port under your account (own host key,
own client key, nothing of ~/.ssh touched), registers it as worker `demo`,
runs a job from a sample project and shows `p ls`. `make demo-stop` stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from sshd_worker import SshdWorkers  # noqa: E402

from p import paths  # noqa: E402

P = os.path.join(os.path.dirname(sys.executable), "p")
SAMPLE = {
    "Makefile": "all:\n\t@echo building on $$(hostname) with $$(nproc) cores\n\t@sh test.sh\n",
    "test.sh": "for i in 1 2 3; do echo \"test $i ok\"; sleep 0.3; done\n",
    ".gitignore": "*.o\n",
    "scratch.o": "ignored by .gitignore, never synced\n",
}


def p(*args: str, cwd: str | None = None) -> int:
    print(f"$ p {' '.join(args)}", flush=True)
    return subprocess.call([P, *args], cwd=cwd)


def stop(state: str) -> None:
    pidfile = os.path.join(state, "sshd.pid")
    try:
        with open(pidfile) as src:
            os.kill(int(src.read().strip()), signal.SIGTERM)
        print("demo worker stopped")
    except (OSError, ValueError):
        print("no demo worker is running")


def main() -> int:
    state = os.path.join(paths.data_dir(), "demo")
    if "--stop" in sys.argv:
        stop(state)
        return 0
    stop_quietly = os.path.exists(os.path.join(state, "sshd.pid"))
    if stop_quietly:
        stop(state)
    os.makedirs(state, exist_ok=True)
    workers = SshdWorkers(state, throwaway_users=False).start(["p-demo"])
    print(f"demo worker: sshd on 127.0.0.1:{workers.port} (config {workers.ssh_config})")
    config = subprocess.run([P, "worker", "ls"], capture_output=True, text=True).stdout
    if not any(line.split()[:1] == ["demo"] for line in config.splitlines()):
        if p("worker", "register", "p-demo", "-n", "demo", "--ssh-config", workers.ssh_config) != 0:
            return 1
    project = os.path.join(state, "project")
    shutil.rmtree(project, ignore_errors=True)
    os.makedirs(project)
    for name, text in SAMPLE.items():
        with open(os.path.join(project, name), "w") as out:
            out.write(text)
    code = p("demo", "--", "make", cwd=project)
    p("ls")
    print("\nThe demo worker keeps running: try `p demo -- <command>` from any directory, "
          "`p ls`, `p logs <id>`.\nStop it with `make demo-stop`.")
    return code


if __name__ == "__main__":
    sys.exit(main())
