"""`make demo`: a private local worker, registered, with a sample job.

Starts an sshd of its own on a loopback port (own host key, own client key,
nothing of ~/.ssh touched), registers it as worker `demo`, runs a job from a
sample project and shows `p ls`. The worker is your own account; as root, it
is a throwaway unprivileged user instead, so the demo never logs in as root.
`make demo-stop` stops all of it: the worker's agent and jobs, the SSH
master, the sshd (and the throwaway user).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from sshd_worker import SshdWorkers, UnsafeDirectory, check_private_dir, delete_users, kill_users  # noqa: E402

from p import config as config_module  # noqa: E402
from p import paths  # noqa: E402
from p.errors import PError  # noqa: E402
from p.ssh import Transport  # noqa: E402

P = os.path.join(os.path.dirname(sys.executable), "p")
WORKER = "demo"
SAMPLE = {
    "Makefile": "all:\n\t@echo building on $$(hostname) with $$(nproc) cores\n\t@sh test.sh\n",
    "test.sh": "for i in 1 2 3; do echo \"test $i ok\"; sleep 0.3; done\n",
    ".gitignore": "*.o\n",
    "scratch.o": "ignored by .gitignore, never synced\n",
}
# Run on the (local, Linux) worker by `demo-stop`: its jobs' tmux server and
# its agent, waited for (an agent finishes its requests before it exits; a
# zombie no init reaps counts as gone).
STOP_WORKER_SH = """\
tmux -S "$HOME/.p/run/tmux.sock" kill-server 2>/dev/null
for pidfile in "$HOME"/.p/run/agent-*.pid; do
    pid=$(cat "$pidfile" 2>/dev/null) && kill "$pid" 2>/dev/null || continue
    n=0
    while grep -qs '^State:[[:space:]]*[^Z]' "/proc/$pid/status" && [ $n -lt 50 ]; do
        sleep 0.1; n=$((n + 1))
    done
done
true
"""


def state_dir() -> str:
    # As root the worker is another user, who must reach its home and the
    # authorized keys here: not under /root. Nor where anyone may create it
    # first (/var/tmp): what it holds decides who logs in and what root kills.
    return "/var/lib/p-demo" if os.getuid() == 0 else os.path.join(paths.data_dir(), "demo")


def p(*args: str, cwd: str | None = None) -> int:
    print(f"$ p {' '.join(args)}", flush=True)
    return subprocess.call([P, *args], cwd=cwd)


def stop(state: str) -> bool:
    """Stop whatever a demo left running; False if there was none."""
    sshd = SshdWorkers(state)
    if not os.path.exists(sshd.pid_file):
        return False
    config = config_module.load()
    if config.has_worker(WORKER):
        transport = Transport(config, config.worker(WORKER))
        try:
            transport.run_script(STOP_WORKER_SH, timeout=20)
        except PError:
            pass  # the worker is gone already
        transport.close_master()
        # Not a fixed list (control socket, agent socket, ...): every file p
        # keeps for a worker here carries its key, whatever p adds later.
        for name in os.listdir(transport.runtime):
            if transport.key in name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(transport.runtime, name))
        try:
            os.rmdir(transport.runtime)  # unless other workers' sockets live there
        except OSError:
            pass
    sshd_pid = sshd.running_pid()
    if sshd_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sshd_pid, signal.SIGTERM)  # it removes its pid file itself
    else:
        # Left from before a reboot, say: its pid may be anyone's now.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sshd.pid_file)
    users = os.path.join(state, "users")
    if os.path.exists(users):
        with open(users) as src:
            names = src.read().split()
        kill_users(names)
        delete_users(names)
        os.unlink(users)
    return True


def main() -> int:
    state = state_dir()
    try:
        if os.path.lexists(state):
            check_private_dir(state)  # before stop() acts on what it says
        if "--stop" in sys.argv:
            print("demo worker stopped" if stop(state) else "no demo worker is running")
            return 0
        stop(state)
        workers = SshdWorkers(state).start(["p-demo"])
    except UnsafeDirectory as error:
        print(f"p: {error}", file=sys.stderr)
        return 1
    if workers.created_users:
        with open(os.path.join(state, "users"), "w") as out:
            out.write("\n".join(workers.created_users) + "\n")
    print(f"demo worker: sshd on 127.0.0.1:{workers.port} (config {workers.ssh_config})")
    config = config_module.load()
    if not config.has_worker(WORKER) or config.worker(WORKER).ssh_config != workers.ssh_config:
        # Not registered yet, or by a demo kept elsewhere (as another user).
        config.workers = [worker for worker in config.workers if worker.name != WORKER]
        config_module.save(config)
        if p("worker", "register", "p-demo", "-n", WORKER, "--ssh-config", workers.ssh_config) != 0:
            return 1
    project = os.path.join(state, "project")
    shutil.rmtree(project, ignore_errors=True)
    os.makedirs(project)
    for name, text in SAMPLE.items():
        with open(os.path.join(project, name), "w") as out:
            out.write(text)
    code = p(WORKER, "--", "make", cwd=project)
    p("ls")
    print(f"\nThe demo worker keeps running: try `p {WORKER} -- <command>` from any directory, "
          "`p ls`, `p logs <id>`.\nStop it with `make demo-stop`.")
    return code


if __name__ == "__main__":
    sys.exit(main())
