"""Benchmarks of p against baselines measured in the same run.

Each figure is a ratio to a baseline taken here and now (plain ssh, plain
rsync, p itself at a smaller size), so machine speed cancels out. Runs
against a real sshd worker on loopback, like the tests. Prints one line per
goal and whether it is met; exits 0 either way (a benchmark is not a test).

    python bench/run.py [--quick]
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from sshd_worker import SshdWorkers, client_env, close_masters  # noqa: E402

P = shutil.which("p") or "p"
QUICK = "--quick" in sys.argv
REPEAT = 3 if QUICK else 7


def timed(argv: list[str], env: dict[str, str], cwd: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def median_time(argv: list[str], env: dict[str, str], cwd: str | None = None, repeat: int = REPEAT) -> float:
    return statistics.median(timed(argv, env, cwd) for _ in range(repeat))


RSYNC_SHIM = """#!/bin/bash
# rsync as p runs it, plus --stats appended to a log: what rsync itself sent.
set -o pipefail
{rsync} --stats "$@" | tee -a {log}
"""


def bytes_sent(log: Path) -> int:
    """Sum of rsync's own "Total bytes sent" in ``log``, then empty it."""
    total = sum(int(line.split(":")[1].replace(",", "").split()[0])
                for line in log.read_text().splitlines() if line.startswith("Total bytes sent"))
    log.write_text("")
    return total


class Bench:
    def __init__(self) -> None:
        self.root = Path(f"/var/tmp/p-bench-{secrets.token_hex(4)}")
        self.sshd = SshdWorkers(str(self.root)).start(["w1"])
        self.home = Path(tempfile.mkdtemp(prefix="p-bench-home-"))
        self.env, self.runtime = client_env(self.home, "pb")
        self.ssh = ["ssh", "-F", self.sshd.ssh_config]
        self.p(["worker", "register", "w1", "--ssh-config", self.sshd.ssh_config])
        self.results: list[tuple[str, float, float, str]] = []

    def p(self, args: list[str], cwd: str | None = None) -> str:
        return subprocess.run([P, *args], env=self.env, cwd=cwd, stdin=subprocess.DEVNULL, check=True,
                              capture_output=True, text=True).stdout

    def report(self, name: str, value: float, goal: float, detail: str) -> None:
        self.results.append((name, value, goal, detail))
        verdict = "met" if value <= goal else "NOT met"
        print(f"{name:<34} {value:7.2f}  (goal <= {goal})  {verdict}   {detail}", flush=True)

    def close(self) -> None:
        subprocess.run(["pkill", "-u", self.sshd.workers["w1"].user], capture_output=True)
        self.close_masters()
        self.sshd.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.runtime, ignore_errors=True)

    def close_masters(self) -> None:
        close_masters(self.runtime)

    # -- the goals ---------------------------------------------------------

    def launch(self) -> None:
        self.p(["-n", "--", "true"])  # warm: master up, agent running
        p_time = median_time([P, "-n", "--", "true"], self.env)
        ssh_time = median_time([*self.ssh, "-o", "ControlMaster=no", "-o", "ControlPath=none", "w1", "true"],
                               self.env)
        self.report("launch: p -n -- true / cold ssh", p_time / ssh_time, 0.2,
                    f"p {p_time * 1000:.0f} ms, ssh {ssh_time * 1000:.0f} ms")

    def launch_cold(self) -> None:
        """The first `p -n -- true` with neither a master nor an agent: the
        handshake, the probe, the agent's start and the job's."""
        user = self.sshd.workers["w1"].user

        def cold() -> float:
            self.close_masters()
            subprocess.run(["pkill", "-u", user, "-f", "p-agent"], capture_output=True)
            while subprocess.run(["pgrep", "-u", user, "-f", "p-agent"], capture_output=True).returncode == 0:
                time.sleep(0.05)
            return timed([P, "-n", "--", "true"], self.env)

        self.p(["-n", "--", "true"])  # the agent is installed: a first run's upload is not measured
        p_time = statistics.median(cold() for _ in range(REPEAT))
        ssh_time = median_time([*self.ssh, "-o", "ControlMaster=no", "-o", "ControlPath=none", "w1", "true"],
                               self.env)
        self.report("launch cold: p -n -- true / cold ssh", p_time / ssh_time, 1.5,
                    f"p {p_time * 1000:.0f} ms (no master, no agent), ssh {ssh_time * 1000:.0f} ms")

    def resync(self) -> None:
        shim_dir, log = self.home / "shim", self.home / "rsync-stats.log"
        shim_dir.mkdir()
        log.write_text("")
        (shim_dir / "rsync").write_text(RSYNC_SHIM.format(rsync=shutil.which("rsync"), log=log))
        (shim_dir / "rsync").chmod(0o755)
        env = {**self.env, "PATH": f"{shim_dir}:{self.env['PATH']}"}
        tree = self.home / "tree"
        files = 2000 if QUICK else 20000
        for i in range(files):
            sub = tree / f"d{i // 200}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{i}.txt").write_text(f"file {i}\n" * 20)
        self.p(["--", "true"], cwd=str(tree))
        first = json.loads(self.p(["ls", "--json"]))[0]["id"]
        # A person edits between two runs; meanwhile the worker finishes the
        # spare copy of the first sync in the background (see Op.PREPARE).
        spares = Path(self.sshd.workers["w1"].home) / ".p" / "spares"
        deadline = time.monotonic() + 120
        while not [d for d in spares.glob("*") if ".tmp-" not in d.name] and time.monotonic() < deadline:
            time.sleep(0.2)
        (tree / "d0" / "f0.txt").write_text("changed\n")
        bytes_sent(log)
        p_time = timed([P, "--", "true"], env, cwd=str(tree))
        p_bytes = bytes_sent(log)
        # Baseline 1: rsync into the previous job's copy (what an ideal resync sends).
        shell = " ".join(self.ssh)
        home = self.sshd.workers["w1"].home
        (tree / "d0" / "f0.txt").write_text("changed again\n")
        timed(["rsync", "-a", "--filter=:- .gitignore", "-e", shell, f"{tree}/",
               f"w1:{home}/.p/workdirs/{first}/"], env)
        base_bytes = bytes_sent(log)
        self.report("resync bytes: p / rsync into prev", p_bytes / base_bytes, 1.2,
                    f"{files} files, p {p_bytes} B, rsync {base_bytes} B")
        # Baseline 2: the manual chain into one fixed directory.
        chain = f"rsync -a -e '{shell}' {tree}/ w1:fixed/ && {shell} w1 'cd fixed && true'"
        subprocess.run(chain, shell=True, env=self.env, check=True, capture_output=True)
        (tree / "d0" / "f0.txt").write_text("changed a third time\n")
        chain_time = timed(["sh", "-c", chain], self.env)
        self.report("resync wall: p / rsync && ssh", p_time / chain_time, 1.2,
                    f"p {p_time:.2f} s, manual chain {chain_time:.2f} s")
        self._resync_busy(tree, chain, spares)

    def _resync_busy(self, tree: Path, chain: str, spares: Path) -> None:
        """Resyncs that come faster than a spare is copied: back to back (the
        next starts the moment the previous returns) and four at once from
        the same directory. The first such runs teach the worker how many
        spares the directory wants; the figures are of the runs after."""
        def change() -> None:
            (tree / "d0" / "f0.txt").write_text(f"changed at {time.time()}\n")

        def at_once(argv: list[str], count: int, env: dict[str, str]) -> float:
            change()
            start = time.perf_counter()
            runs = [subprocess.Popen(argv, env=env, cwd=str(tree), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]
            for run in runs:
                run.wait()
            return time.perf_counter() - start

        def settle() -> None:
            deadline = time.monotonic() + 120
            while [d for d in spares.glob("*") if ".tmp-" in d.name] and time.monotonic() < deadline:
                time.sleep(0.2)

        seconds = []
        for _ in range(3):  # a pair: a run, and the next the moment it returns
            for _ in range(2):
                change()
                seconds.append(timed([P, "--", "true"], self.env, cwd=str(tree)))
            settle()
        chain_time = median_time(["sh", "-c", chain], self.env)
        self.report("resync back to back: p / chain", seconds[-1] / chain_time, 1.2,
                    f"2nd of a pair: p {seconds[-1]:.2f} s (1st pair's: {seconds[1]:.2f} s), chain {chain_time:.2f} s")
        for _ in range(2):  # the first round teaches the worker to keep four spares
            at_once([P, "--", "true"], 4, self.env)
            settle()
        p_time = at_once([P, "--", "true"], 4, self.env)
        settle()
        chain_time = at_once(["sh", "-c", chain], 4, self.env)
        self.report("resync 4 at once: p / 4 chains", p_time / chain_time, 1.2,
                    f"slowest of 4: p {p_time:.2f} s, manual chain {chain_time:.2f} s")

    def manifest(self) -> None:
        """P13: a 100,000-file tree with nothing changed since the last run.
        `p -- true` (each run once the worker's spare of the last sync is
        ready, as after any pause) against a no-op `rsync -a` of the same
        tree into a fixed directory over p's own master."""
        import hashlib
        import socket

        tree = self.home / "big"
        files = 10000 if QUICK else 100000
        for i in range(files):
            sub = tree / f"d{i // 100:04d}"
            if i % 100 == 0:
                sub.mkdir(parents=True)
            (sub / f"f{i}.py").write_text(f"x = {i}\n")
        key = hashlib.sha256(f"{socket.gethostname()}\0{tree}".encode()).hexdigest()[:16]
        spares = Path(self.sshd.workers["w1"].home) / ".p" / "spares"

        def settled() -> None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                ours = [d.name for d in spares.glob(f"{key}*")]
                if ours and not [name for name in ours if ".tmp-" in name]:
                    return
                time.sleep(0.2)

        # Two syncs: the first walk meets files written a moment ago, too
        # fresh to vouch for (see p/manifest.py), and keeps no manifest.
        for _ in range(2):
            self.p(["--", "true"], cwd=str(tree))
            settled()
        before = {job["id"] for job in json.loads(self.p(["ls", "--json"]))}
        seconds = []
        for _ in range(REPEAT):
            seconds.append(timed([P, "--", "true"], self.env, cwd=str(tree)))
            settled()
        jobs = [job for job in json.loads(self.p(["ls", "--json"])) if job["id"] not in before]
        skipped = sum(job["sync_bytes"] == 0 for job in jobs)
        [master] = [path for path in (self.runtime / "p").glob("cm-*") if path.is_symlink()]
        shell = f"{' '.join(self.ssh)} -o ControlMaster=no -o ControlPath={master}"
        rsync = ["rsync", "-a", "-e", shell, f"{tree}/", "w1:fixed-big/"]
        timed(rsync, self.env)  # fills it: the runs timed find nothing to do
        rsync_time = median_time(rsync, self.env)
        p_time = statistics.median(seconds)
        self.report("no change, 100k files: p / rsync no-op", p_time / rsync_time, 1.0,
                    f"{files} files, p {p_time:.2f} s ({skipped}/{len(jobs)} skipped rsync), "
                    f"rsync -a no-op {rsync_time:.2f} s")

    def ls_scale(self) -> None:
        jobs = self.home / ".local/share" / "p" / "jobs"

        def fill(count: int) -> float:
            shutil.rmtree(jobs, ignore_errors=True)
            (self.home / ".local/share" / "p" / "jobs.index.json").unlink(missing_ok=True)
            jobs.mkdir(parents=True)
            for i in range(count):
                job_id = uuid.uuid4().hex
                record = {"id": job_id, "worker": "w1", "cwd": "~/projects/foo", "command": f"make test {i}",
                          "status": "done", "exit_code": 0, "started_at": 1.7e9 + i, "ended_at": 1.7e9 + i + 5,
                          "synced": True, "checked_at": 1.7e9 + i}
                (jobs / f"{job_id}.json").write_text(json.dumps(record))
            self.p(["ls"])  # builds the index once
            return median_time([P, "ls"], self.env), median_time([P, "-n", "--", "true"], self.env)

        (small, small_run), (large, large_run) = fill(10), fill(10000)
        self.report("p ls: 10,000 records / 10", large / small, 1.5,
                    f"{small * 1000:.0f} ms vs {large * 1000:.0f} ms")
        # Each launch saves its record twice; a save once parsed and rewrote every record.
        self.report("launch: 10,000 records / 10", large_run / small_run, 1.5,
                    f"p -n -- true {small_run * 1000:.0f} ms vs {large_run * 1000:.0f} ms")
        # Tab after `p attach ` in bash, as typer's script asks it (issue 14).
        completing = {**self.env, "_P_COMPLETE": "complete_bash", "COMP_WORDS": "p\nattach\n", "COMP_CWORD": "2"}
        tab = median_time([P], completing)
        self.report("completion of job ids, 10,000 records (ms)", tab * 1000, 100,
                    "`p attach <Tab>` in bash, absolute")
        shutil.rmtree(jobs)
        (self.home / ".local/share" / "p" / "jobs.index.json").unlink(missing_ok=True)

    def check_scale(self) -> None:
        import yaml

        config_path = self.home / ".config" / "p" / "config.yaml"
        original = config_path.read_text()
        config = yaml.safe_load(original)
        worker = config["workers"][0]

        def with_workers(count: int) -> float:
            config["workers"] = [{**worker, "name": f"w{i}"} for i in range(count)]
            config_path.write_text(yaml.safe_dump(config))
            return median_time([P, "worker", "ls", "--check"], self.env, repeat=3)

        one, fifty = with_workers(1), with_workers(50)
        config_path.write_text(original)
        self.report("worker ls --check: 50 / 1", fifty / one, 2.0, f"{one:.2f} s vs {fifty:.2f} s")

    def pool_scale(self) -> None:
        """Placement over a pool of 20 workers against a pool of 1: 20 names
        of one worker (as check_scale), each with a master of its own, so
        what is measured is p asking 20 agents at once and choosing."""
        import yaml

        config_path = self.home / ".config" / "p" / "config.yaml"
        original = config_path.read_text()
        config = yaml.safe_load(original)
        worker = config["workers"][0]
        config["workers"] = [worker, *({**worker, "name": f"p{i}", "pools": ["big"]} for i in range(20)),
                             {**worker, "name": "solo", "pools": ["small"]}]
        config_path.write_text(yaml.safe_dump(config))
        try:
            for pool in ("big", "small"):
                self.p([f"@{pool}", "-n", "-d", "--", "true"])  # warm: every master up
            big = median_time([P, "@big", "-n", "-d", "--", "true"], self.env)
            small = median_time([P, "@small", "-n", "-d", "--", "true"], self.env)
        finally:
            config_path.write_text(original)
        self.report("p @pool -n -d -- true: 20 / 1", big / small, 1.5,
                    f"{small * 1000:.0f} ms vs {big * 1000:.0f} ms")

    def queue_delay(self) -> None:
        """From a slot freeing (the job's end, as the worker records it) to
        the next queued job starting (its start time there)."""
        self.p(["worker", "set", "w1", "--slots", "1"])
        jobs = Path(self.sshd.workers["w1"].home) / ".p" / "jobs"
        delays = []
        try:
            for _ in range(REPEAT):
                first = self.p(["-n", "-d", "--", "sleep 0.5"]).strip()
                second = self.p(["-n", "-d", "--", "true"]).strip()
                self.p(["wait", second])
                ended = float((jobs / first / "ended_at").read_text())
                started = float((jobs / second / "started_at").read_text())
                delays.append(started - ended)
        finally:
            self.p(["worker", "set", "w1", "--slots", "0"])
        delay = statistics.median(delays)
        self.report("queue: slot freed -> next starts (s)", delay, 0.5,
                    f"median of {len(delays)}, worst {max(delays) * 1000:.0f} ms")

    def memory(self) -> None:
        user = self.sshd.workers["w1"].user
        count = 10

        def pss_kib(pids: list[int]) -> int:
            total = 0
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/smaps_rollup") as src:
                        for line in src:
                            if line.startswith("Pss:"):
                                total += int(line.split()[1])
                except OSError:
                    pass
            return total

        def processes() -> dict[int, str]:
            out = subprocess.run(["ps", "-u", user, "-o", "pid=,args="], capture_output=True, text=True).stdout
            return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.splitlines()}

        def ours(procs: dict[int, str]) -> list[int]:
            # Everything p keeps per job: tmux server, run.sh, the pane pipe's
            # cat. Not the agent (shared, one per worker), not the job itself.
            return [pid for pid, args in procs.items()
                    if ("tmux" in args and "run/tmux.sock" in args) or "run.sh" in args
                    or args.startswith("cat") or args.startswith("sh -c cat")]

        self.p(["-n", "--", "true"])
        before = pss_kib(ours(processes()))
        ids = [self.p(["-d", "-n", "--", "sleep 120"]).strip() for _ in range(count)]
        time.sleep(1)
        after = pss_kib(ours(processes()))
        for job in ids:
            self.p(["stop", "--grace", "1", job])
        per_job_mb = (after - before) / count / 1024
        self.report("worker memory per running job (MB)", per_job_mb, 4.0,
                    f"PSS of tmux + run.sh + capture, {count} jobs")


    def leftovers(self) -> None:
        """What a finished job leaves running on the worker: nothing, once
        nobody watches its end (the "Job done" screen is for someone looking)."""
        user = self.sshd.workers["w1"].user
        count = 10

        def lingering() -> list[str]:
            # Everything of the worker user's but the agent (shared, one per
            # worker) and sshd's own processes for the SSH connection.
            out = subprocess.run(["ps", "-u", user, "-o", "stat=,args="], capture_output=True, text=True).stdout
            return [line for line in out.splitlines()
                    if not line.startswith("Z") and "p-agent" not in line and "sshd" not in line]

        self.p(["-n", "--", "true"])
        before = len(lingering())
        ids = [self.p(["-d", "-n", "--", "true"]).strip() for _ in range(count)]
        for job in ids:
            self.p(["wait", job])
        deadline = time.monotonic() + 10  # run.sh exits just after the exit code is written
        while len(lingering()) > before and time.monotonic() < deadline:
            time.sleep(0.1)
        per_job = (len(lingering()) - before) / count
        self.report("processes left per finished job", per_job, 0.0,
                    f"{count} jobs started with -d, waited for, nobody attached")

    def ls_cut(self) -> None:
        """`p ls` three times in a row while the worker's port drops every
        packet (a network cut), against `p ls` with the worker reachable: it
        answers from the local store, within its deadline for the workers."""
        if os.getuid() != 0 or shutil.which("iptables") is None:
            print("p ls during a cut: skipped (needs root and iptables)", flush=True)
            return
        job = self.p(["-n", "-d", "--", "sleep 600"]).strip()
        reachable = median_time([P, "ls"], self.env)
        # Only this sshd's port, only on loopback: nothing else is cut.
        rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(self.sshd.port), "-j", "DROP"]
        subprocess.run(["iptables", "-I", *rule], check=True)
        try:
            cut = [timed([P, "ls"], self.env) for _ in range(3)]
        finally:
            subprocess.run(["iptables", "-D", *rule], check=True)
        self.close_masters()
        self.p(["stop", "--grace", "1", job])
        shown = ", ".join(f"{seconds * 1000:.0f}" for seconds in cut)
        self.report("p ls during a cut / reachable", max(cut) / reachable, 20.0,
                    f"3 in a row: {shown} ms vs {reachable * 1000:.0f} ms")


def main() -> int:
    bench = Bench()
    try:
        only = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
        for step in (bench.launch, bench.launch_cold, bench.resync, bench.manifest, bench.ls_scale,
                     bench.check_scale, bench.pool_scale,
                     bench.queue_delay, bench.memory, bench.leftovers, bench.ls_cut):
            if not only or step.__name__ in only:
                step()
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
