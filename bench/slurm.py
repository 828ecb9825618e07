"""Benchmarks of the Slurm engine against Slurm itself, on a real
single-node cluster (tests/slurm_cluster.py) whose login node is a loopback
sshd worker, as in the tests. Prints one line per goal; exits 0 either way.

    python bench/slurm.py [--quick]
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from slurm_cluster import SlurmCluster  # noqa: E402
from sshd_worker import SshdWorkers, client_env, close_masters  # noqa: E402

P = shutil.which("p") or "p"
QUICK = "--quick" in sys.argv
REPEAT = 5 if QUICK else 15
MANY = 50 if QUICK else 200


class SlurmBench:
    def __init__(self) -> None:
        self.root = Path(f"/var/tmp/p-bench-slurm-{secrets.token_hex(4)}")
        self.cluster = SlurmCluster(str(self.root / "slurm"))
        self.sshd = SshdWorkers(str(self.root)).start(["login"], environment={"login": {
            "SLURM_CONF": self.cluster.conf}})
        os.makedirs(self.cluster.root, mode=0o755)
        self.cluster.start()
        self.user = self.sshd.workers["login"].user
        self.home = Path(tempfile.mkdtemp(prefix="p-bench-home-"))
        self.project = self.home / "project"
        self.project.mkdir()
        (self.project / "main.c").write_text("int main(void) { return 0; }\n")
        self.env, self.runtime = client_env(self.home, "pb")
        self.p(["worker", "register", "login", "--ssh-config", self.sshd.ssh_config, "--slurm", "-n", "cluster"])

    def p(self, args: list[str]) -> str:
        return subprocess.run([P, *args], env=self.env, cwd=self.project, stdin=subprocess.DEVNULL, check=True,
                              capture_output=True, text=True).stdout

    def squeue(self, *args: str) -> str:
        return self.cluster.run("squeue", "-h", "-u", self.user, *args).stdout

    def report(self, name: str, value: float, goal: float, detail: str) -> None:
        verdict = "met" if value <= goal else "NOT met"
        print(f"{name:<34} {value:7.2f}  (goal <= {goal})  {verdict}   {detail}", flush=True)

    def cancel_all(self) -> None:
        self.cluster.run("scancel", "-u", self.user)
        deadline = time.monotonic() + 30
        while self.squeue("-o", "%i").strip() and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.cancel_all()
        close_masters(self.runtime)
        self.cluster.stop()
        self.sshd.stop()
        for path in (self.root, self.home, self.runtime):
            shutil.rmtree(path, ignore_errors=True)

    # -- the goals ---------------------------------------------------------

    def settle(self) -> None:
        """Nothing queued or running, and a pause of random length: each
        submission meets the scheduler in the same state and at a random
        point of its cycle (slurmctld's background loop starts the pending
        jobs about once a second, so a fixed pause would favour one side)."""
        self.cancel_all()
        time.sleep(1.0 + random.random())

    def until_running(self, name: str, start: float) -> float:
        """Seconds from ``start`` until Slurm shows the job named ``name`` RUNNING."""
        while True:
            if self.squeue("-n", name, "-o", "%T").strip() == "RUNNING":
                return time.perf_counter() - start
            time.sleep(0.01)

    def submit(self) -> None:
        self.p(["-d", "--", "true"])  # warm: master up, agent running
        p_times, sbatch_times = [], []
        for _ in range(REPEAT):
            self.settle()
            start = time.perf_counter()
            job_id = self.p(["-d", "--", "sleep 600"]).strip()
            p_times.append(self.until_running(f"p-{job_id[:8]}", start))
            self.settle()
            name = f"b-{secrets.token_hex(4)}"
            start = time.perf_counter()
            # The baseline runs on the login node itself: no SSH, no sync.
            self.cluster.run("sh", "-c", f"cd && sbatch -Q -J {name} --wrap 'sleep 600'", user=self.user)
            sbatch_times.append(self.until_running(name, start))
        self.cancel_all()
        p_time, sbatch_time = statistics.median(p_times), statistics.median(sbatch_times)
        self.report("p -d / sbatch --wrap, to RUNNING", p_time / sbatch_time, 1.2,
                    f"p {p_time:.2f} s, sbatch {sbatch_time:.2f} s (median of {REPEAT})")

    def ls_scale(self) -> None:
        def refresh() -> float:
            times = []
            for _ in range(REPEAT):
                start = time.perf_counter()
                self.p(["ls", "--refresh"])
                times.append(time.perf_counter() - start)
            return statistics.median(times)

        self.p(["rm", "--all"])
        self.p(["-d", "-n", "--", "sleep 600"])
        one = refresh()
        for _ in range(MANY - 1):
            self.p(["-d", "-n", "--", "sleep 600"])
        active = sum(1 for job in json.loads(self.p(["ls", "--json"])) if job["status"] in ("queued", "running"))
        many = refresh()
        self.report(f"p ls --refresh: {MANY} Slurm jobs / 1", many / one, 1.5,
                    f"{one * 1000:.0f} ms vs {many * 1000:.0f} ms ({active} queued or running)")
        self.cancel_all()


def main() -> int:
    bench = SlurmBench()
    try:
        only = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
        for step in (bench.submit, bench.ls_scale):
            if not only or step.__name__ in only:
                step()
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
