"""The Slurm engine end to end: a real cluster (tests/slurm_cluster.py), its
login node one of the tests' sshd workers, `p` run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import PClient
from helpers import eventually, one_line_error
from slurm_cluster import SlurmCluster
from sshd_worker import SshdWorkers
from test_interactive import Screen


@pytest.fixture
def ps(p: PClient, slurm: SlurmCluster) -> Iterator[PClient]:
    """A client with the cluster registered as worker `cluster` (the default)."""
    p.register("login", "--slurm", "-n", "cluster", check=True)
    yield p
    # The cluster is shared by the whole session: leave it empty, and say
    # so here if it is not (a job left holding CPUs would fail the next test).
    for record in p.jobs():
        if record["status"] in ("queued", "running", "unknown"):
            p("stop", str(record["id"]))
    user = p.sshd.workers["login"].user
    left = ""
    for _ in range(600):
        left = slurm.run("squeue", "--noheader", "--user", user, "--format", "%i %T %j %R").stdout.strip()
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"jobs left on the cluster after the test: {left}"


def record(p: PClient, job_id: str) -> dict[str, object]:
    return next(job for job in p.jobs() if job["id"] == job_id)


def refreshed(p: PClient, job_id: str) -> dict[str, object]:
    p("ls", "--refresh", check=True)
    return record(p, job_id)


def detached(p: PClient, *args: str) -> str:
    return p("-d", *args, check=True).stdout.strip()


def test_cluster_runs_a_login_users_batch_job(slurm: SlurmCluster, sshd: SshdWorkers) -> None:
    # As a user would: logged in to the login node, SLURM_CONF set there.
    submitted = subprocess.run(["ssh", "-F", sshd.ssh_config, "login", "sbatch --parsable --wrap 'exit 3'"],
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    def state() -> str:
        shown = slurm.run("scontrol", "show", "job", job_id).stdout
        return shown if "JobState=FAILED" in shown else ""

    assert "ExitCode=3:0" in str(eventually(state, timeout=30))


def test_submit_with_sync_streams_and_exits_with_the_jobs_status(ps: PClient, slurm: SlurmCluster) -> None:
    (ps.workdir / "data.txt").write_text("synced\n")
    result = ps("--", "cat data.txt; echo in $SLURM_JOB_ID; exit 3", timeout=120)
    assert result.returncode == 3, result
    [job] = ps.jobs()
    assert job["status"] == "done" and job["exit_code"] == 3
    assert result.stdout.splitlines() == ["synced", f"in {job['engine_id']}"]
    assert job["node_list"] == slurm.node
    # A client that starts afresh (no master, no cache) sees the same.
    ps.close_masters()
    assert refreshed(ps, str(job["id"]))["status"] == "done"
    # The login node's agent answers `worker ls --check` as any worker's does.
    [checked] = json.loads(ps("worker", "ls", "--check", "--json", check=True).stdout)
    assert checked["engine"] == "slurm" and checked["check"]["ok"] is True, checked
    assert checked["check"]["arch"] == os.uname().machine and checked["check"]["free"] > 0


def test_queued_behind_a_job_holding_every_cpu_then_stopped(ps: PClient, slurm: SlurmCluster) -> None:
    holder = detached(ps, "--cpus", str(slurm.cpus), "--", "sleep 120")
    eventually(lambda: refreshed(ps, holder)["status"] == "running", timeout=30)
    waiter = detached(ps, "-n", "--", "echo ran")
    # Slurm gives the reason once its scheduler has looked at the job.
    job = eventually(lambda: (job := refreshed(ps, waiter))["reason"] and job, timeout=30)
    assert job["status"] == "queued" and job["reason"] in ("Resources", "Priority"), job
    listing = ps("ls", check=True).stdout
    assert f"queued ({job['reason']})" in listing
    assert ps("stop", holder, timeout=60).returncode == 0
    assert record(ps, holder)["status"] == "stopped"
    assert ps("wait", waiter, timeout=60).returncode == 0
    assert ps("logs", waiter, check=True).stdout == "ran\n"


def test_stop_a_queued_job(ps: PClient, slurm: SlurmCluster) -> None:
    holder = detached(ps, "-n", "--cpus", str(slurm.cpus), "--", "sleep 120")
    waiter = detached(ps, "-n", "--cpus", str(slurm.cpus), "--", "echo never")
    eventually(lambda: refreshed(ps, waiter)["status"] == "queued", timeout=30)
    assert ps("stop", waiter, timeout=30).returncode == 0
    assert record(ps, waiter)["status"] == "stopped"
    assert ps("stop", holder, timeout=60).returncode == 0


def test_stop_gives_a_running_job_its_grace_and_keeps_its_end(ps: PClient, slurm: SlurmCluster) -> None:
    """SIGTERM reaches the job's own processes, as on a tmux worker: a job
    that traps it cleans up and its own exit status and output are kept.
    Stopped the moment it starts, while squeue may still call it PENDING
    (a view the agent cached a moment ago): three times, as that is a race."""
    for _ in range(3):
        job_id = detached(ps, "-n", "--", "trap 'echo cleanup; exit 7' TERM; echo up; while :; do sleep 0.1; done")
        eventually(lambda job_id=job_id: ps("logs", job_id).stdout.startswith("up"), timeout=60, interval=0.05,
                   explain=lambda: slurm.run("squeue", "--states=all").stdout)
        assert ps("stop", "--grace", "20", job_id, timeout=60).returncode == 0
        job = record(ps, job_id)
        assert (job["status"], job["exit_code"]) == ("stopped", 7), job
        logged = ps("logs", job_id, check=True).stdout  # the shell may say its sleep was "Terminated"
        assert logged.startswith("up\n") and logged.endswith("cleanup\n"), logged


def test_timeout_ends_the_job_as_timeout(ps: PClient) -> None:
    job_id = detached(ps, "-n", "--timeout", "2s", "--", "echo started; sleep 100")
    ps("wait", job_id, timeout=60)
    job = record(ps, job_id)
    assert job["status"] == "timeout" and job["exit_code"] == 124, job
    assert job["sbatch_args"] == [] and job["timeout"] == 2.0
    assert ps("logs", job_id, check=True).stdout.startswith("started")


def test_logs_follow_pull_and_isolated_workdirs(ps: PClient) -> None:
    (ps.workdir / "in.txt").write_text("one\n")
    first = detached(ps, "--", "cat in.txt > out.txt; echo a; sleep 1; echo b")
    (ps.workdir / "in.txt").write_text("second\n")  # another size: rsync's quick check
    second = detached(ps, "--", "cat in.txt > out.txt")
    followed = ps("logs", "-f", first, timeout=60)
    assert followed.stdout == "a\nb\n"
    ps("wait", second, timeout=60)
    for job_id, text in ((first, "one\n"), (second, "second\n")):
        target = ps.home / f"out-{job_id}.txt"
        assert ps("pull", job_id, "out.txt", str(target), timeout=60).returncode == 0
        assert target.read_text() == text


def test_attach_goes_through_srun_overlap(ps: PClient) -> None:
    screen = Screen(ps)
    try:
        window = screen.start("--", "echo hello-from-node; sleep 4; exit 5")
        shown = screen.wait_for(window, r"\[running\] 0:00:0\d", timeout=60)
        assert "hello-from-node" in shown
        screen.wait_for(window, r"--- Job done \[exit 5\]", timeout=60)
        screen.keys(window, "x")
        screen.wait_for(window, r"p-exit=5", timeout=30)
    finally:
        screen.close()


def test_sbatch_settings_are_checked_and_passed(p: PClient, slurm: SlurmCluster) -> None:
    line = one_line_error(p.register("login", "--slurm", "-n", "bad", "--sbatch-arg", "script.sh"))
    assert "not an sbatch option" in line
    p.register("login", "--slurm", "-n", "cluster", "--partition", "nosuch", check=True)
    refused = p("-n", "--", "true", timeout=60)
    assert "sbatch refused the job" in one_line_error(refused) and "partition" in refused.stderr.lower()


def test_register_names_missing_slurm_tools(p: PClient, slurm: SlurmCluster) -> None:
    line = one_line_error(p.register("noslurm", "--slurm", "-n", "nocluster"))
    assert "sbatch" in line and "squeue" in line


def test_rerun_on_slurm_passes_the_workers_sbatch_settings_once(p: PClient, slurm: SlurmCluster) -> None:
    p.register("login", "--slurm", "-n", "cluster", "--sbatch-arg=--comment=from-worker", check=True)
    result = p("-n", "-e", "X=1", "--", "echo $X", timeout=120)
    assert result.returncode == 0 and result.stdout == "1\n", result.stderr
    (first,) = p.jobs()
    assert first["sbatch_args"] == ["--comment=from-worker"]
    result = p("rerun", str(first["id"]), timeout=120)
    assert result.returncode == 0 and result.stdout == "1\n", result.stderr
    second = p.jobs()[0]
    assert second["rerun_of"] == first["id"] and second["sbatch_args"] == ["--comment=from-worker"]


def test_a_job_slurm_cancels_ends_stopped_and_logged_after_its_start(ps: PClient, slurm: SlurmCluster) -> None:
    """scancel from outside p (a user, an admin) ends run.sh with the job:
    the batch script records the end, timed to the millisecond as every
    other event, so the worker's log stays in order."""
    job_id = detached(ps, "-n", "--", "echo up; sleep 600")
    eventually(lambda: ps("logs", job_id).stdout.startswith("up"), timeout=60, interval=0.05)
    engine_id = str(refreshed(ps, job_id)["engine_id"])
    assert slurm.run("scancel", "--full", engine_id).returncode == 0
    ps("wait", job_id, timeout=60)
    job = record(ps, job_id)
    assert (job["status"], job["exit_code"]) == ("stopped", 143), job
    events = [json.loads(line) for line in ps("events", "--json", job_id, check=True).stdout.splitlines()]
    worker = [(event["event"], event["time"]) for event in events if event["source"] == "worker"]
    started = next(time for name, time in worker if name == "started")
    ended = next(time for name, time in worker if name == "ended")
    assert ended >= started, worker
