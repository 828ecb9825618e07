"""Many workers (issue 10) end to end on real sshd workers: slots and the
worker's queue, GPUs, pools and placement, drain, attaching to a queued job,
and the approval gate (issue 9)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import PClient
from helpers import eventually, job_dir, one_line_error
from test_interactive import Screen

from p.schema import problems
from p_protocol import VERSION


@pytest.fixture(autouse=True)
def settings_undone(p: PClient) -> Iterator[None]:
    """The workers outlive the test: their settings (kept by their agents)
    go back to none, so the queue lets every job through again."""
    yield
    for worker in json.loads(p("worker", "ls", "--json").stdout or "[]"):
        if worker["name"] in p.sshd.workers:
            p("worker", "set", worker["name"], "--slots", "0", "--gpus", "auto", "--no-require-approval")
            p("worker", "resume", worker["name"])


def _detached(p: PClient, *args: str) -> tuple[str, str]:
    """Start a detached job: its id and what p said on stderr."""
    result = p(*args, check=True)
    return result.stdout.strip(), result.stderr


def _times(home: Path, job_id: str) -> tuple[float, float] | None:
    """When the worker started and ended the job, once it has ended."""
    directory = job_dir(home, job_id)
    try:
        if not (directory / "exitcode").read_text().strip():
            return None
        return float((directory / "started_at").read_text()), float((directory / "ended_at").read_text())
    except (OSError, ValueError):
        return None


def _state(p: PClient, job_id: str) -> dict[str, object]:
    (job,) = [job for job in json.loads(p("ls", "--json", "--refresh", check=True).stdout) if job["id"] == job_id]
    return job


def _umask(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))


def _submitted(home: Path, job_id: str) -> int:
    """When the worker took the job in (its command file is written once, then)."""
    return (job_dir(home, job_id) / "cmd").stat().st_mtime_ns


def test_twenty_jobs_at_once_on_two_slots_run_two_at_a_time_in_order(p1: PClient) -> None:
    p1("worker", "set", "w1", "--slots", "2", check=True)
    submits = [subprocess.Popen(["p", "-n", "-d", "--", "sleep 0.3"], env=p1.env, cwd=p1.workdir,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(20)]
    ids = []
    for process in submits:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        ids.append(out.strip())
    home = p1.worker_home("w1")
    times = eventually(lambda: (found := [_times(home, job_id) for job_id in ids]) and all(found) and found,
                       timeout=90)
    spans = dict(zip(ids, times))  # type: ignore[call-overload]
    # Never more than two at once: at each start, count who else runs.
    for job_id, (start, _) in spans.items():
        running = [other for other, (s, e) in spans.items() if other != job_id and s <= start < e]
        assert len(running) <= 1, (job_id, running)
    # FIFO: in the order the worker took them in.
    by_submission = sorted(ids, key=lambda job_id: _submitted(home, job_id))
    assert sorted(ids, key=lambda job_id: spans[job_id][0]) == by_submission
    # None lost: every one ran to its end, as p says too.
    jobs = {job["id"]: job for job in json.loads(p1("ls", "--json", "--refresh", check=True).stdout)}
    assert all(jobs[job_id]["status"] == "done" and jobs[job_id]["exit_code"] == 0 for job_id in ids)
    state = json.loads(p1("worker", "ls", "--json", check=True).stdout)[0]["state"]
    assert (state["slots"], state["slots_used"], state["queued"]) == (2, 0, 0)


def test_a_queued_job_streams_when_it_starts_and_stop_and_rm_take_jobs_out(p1: PClient) -> None:
    p1("worker", "set", "w1", "--slots", "1", check=True)
    blocker, _ = _detached(p1, "-n", "-d", "--", "sleep 2")
    # Off a terminal: one line, then the job's output once it ran.
    result = p1("-n", "--", "echo ran; exit 3")
    assert result.returncode == 3 and result.stdout == "ran\n"
    assert "p: queued on w1, position 1" in result.stderr
    assert _state(p1, blocker)["status"] == "done"
    blocker, _ = _detached(p1, "-n", "-d", "--", "sleep 60")
    stopped, said = _detached(p1, "-n", "-d", "--", "touch ran-stopped")
    assert "queued on w1, position 1" in said
    removed, _ = _detached(p1, "-n", "-d", "--", "true")
    listing = p1("ls", check=True).stdout
    assert re.search(rf"{removed[:8]} .* queued #2", listing), listing
    assert "out of w1's queue; it never ran" in p1("stop", stopped[:8], check=True).stderr
    assert _state(p1, stopped)["status"] == "stopped"
    assert _state(p1, removed)["position"] == 1
    p1("rm", removed[:8], check=True)
    assert not job_dir(p1.worker_home("w1"), removed).exists()
    assert json.loads(p1("worker", "ls", "--json", check=True).stdout)[0]["state"]["queued"] == 0
    p1("stop", blocker[:8], "-t", "1", check=True)
    assert not (p1.worker_home("w1") / ".p/workdirs" / stopped / "ran-stopped").exists()


def test_the_queue_survives_killing_the_agent_and_moves_without_a_client(p1: PClient) -> None:
    p1("worker", "set", "w1", "--slots", "1", check=True)
    ids = [_detached(p1, "-n", "-d", "--", command)[0] for command in ("sleep 2", "sleep 0.2", "sleep 0.2")]
    home = p1.worker_home("w1")
    queue = json.loads((home / ".p/queue.json").read_text())
    assert [entry["id"] for entry in queue["waiting"]] == ids[1:]
    pid = int((home / f".p/run/agent-{VERSION}.pid").read_text())
    umask = _umask(pid)
    os.kill(pid, signal.SIGKILL)
    p1.close_masters()  # no client either
    # The first job ends with no agent: it starts one, which starts the rest.
    eventually(lambda: all(_times(home, job_id) for job_id in ids), timeout=60)
    starts = [_times(home, job_id)[0] for job_id in ids]  # type: ignore[index]
    assert starts == sorted(starts)
    new_pid = int((home / f".p/run/agent-{VERSION}.pid").read_text())
    assert new_pid != pid
    assert _umask(new_pid) == umask  # the user's, which later jobs get: not the job script's 077
    assert [_state(p1, job_id)["status"] for job_id in ids] == ["done", "done", "done"]


def test_gpus_are_handed_out_and_visible_to_the_job(p1: PClient) -> None:
    # A GPU-less worker with declared GPUs: the assignment is what is tested.
    result = p1("worker", "set", "w1", "--gpus", "0,1,2", check=True)
    assert "GPUs 0,1,2" in result.stderr
    result = p1("-n", "-g", "2", "--", 'echo "cuda=$CUDA_VISIBLE_DEVICES"')
    assert result.returncode == 0 and result.stdout == "cuda=0,1\n", result.stderr
    assert p1.jobs()[0]["gpu_ids"] == [0, 1] and p1.jobs()[0]["gpus"] == 2
    holder, _ = _detached(p1, "-n", "-d", "-g", "2", "--", "sleep 60")
    waiter, said = _detached(p1, "-n", "-d", "-g", "2", "--", 'echo "cuda=$CUDA_VISIBLE_DEVICES"')
    assert "queued on w1, position 1" in said  # one GPU free, two asked
    state = json.loads(p1("worker", "ls", "--json", check=True).stdout)[0]["state"]
    assert (state["gpus"], state["gpus_free"], state["queued"]) == ([0, 1, 2], [2], 1)
    p1("stop", holder[:8], "-t", "1", check=True)
    assert p1("wait", waiter[:8]).returncode == 0
    assert p1("logs", waiter[:8], check=True).stdout.strip() == "cuda=0,1"
    assert "asks for 4 GPU(s) and worker w1 has 3" in one_line_error(p1("-n", "-g", "4", "--", "true"))


@pytest.fixture
def three(p: PClient) -> PClient:
    for name in ("w1", "w2", "w3"):
        p.register(name, "--slots", "2", "--pool", "grid", check=True)
    return p


def test_placement_spreads_jobs_over_a_pool_and_skips_a_dead_worker(three: PClient) -> None:
    p = three
    placed = []
    for _ in range(6):
        job_id, said = _detached(p, "@grid", "-n", "-d", "--", "sleep 60")
        assert re.search(r"p: pool grid: placed on w[123] ", said), said
        placed.append(job_id)
    workers = [job["worker"] for job in p.jobs()]
    assert sorted(workers) == ["w1", "w1", "w2", "w2", "w3", "w3"]
    assert {job["pool"] for job in p.jobs()} == {"grid"}
    # All full: the next waits where the queue is shortest.
    job_id, said = _detached(p, "-w", "@grid", "-n", "-d", "--", "true")
    assert "queued on" in said and "position 1" in said
    listing = json.loads(p("worker", "ls", "--json", check=True).stdout)
    assert sorted(w["state"]["queued"] for w in listing) == [0, 0, 1]
    assert all(w["state"]["slots_used"] == 2 and w["pools"] == ["grid"] for w in listing)
    assert all(problems(w, "worker") == [] for w in listing)
    for job in placed + [job_id]:
        p("stop", job[:8], "-t", "1", check=True)
    # A worker that does not answer is skipped with one line; a drained one too.
    config = p.home / ".config/p/config.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["workers"].append({"name": "dead", "connection": "down", "ssh_config": p.sshd.ssh_config,
                                "pools": ["grid"]})
    config.write_text(yaml.safe_dump(settings))
    p("worker", "drain", "w1", "w2", check=True)
    result = p("@grid", "-n", "--", "echo here")
    assert result.returncode == 0 and result.stdout == "here\n", result.stderr
    assert re.search(r"^p: .*worker dead .*; skipped$", result.stderr, re.MULTILINE), result.stderr
    assert "placed on w3" in result.stderr
    p("worker", "drain", "--all")
    refused = p("@all", "-n", "--", "true")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == ("p: every worker of pool all that answered is drained; "
                                               "`p worker resume NAME` lets one take jobs again")
    table = p("worker", "ls").stdout
    assert re.search(r"^dead .* unreachable", table, re.MULTILINE), table


def test_drain_refuses_new_jobs_and_resume_lets_the_queue_move(p1: PClient) -> None:
    p1("worker", "set", "w1", "--slots", "1", check=True)
    running, _ = _detached(p1, "-n", "-d", "--", "sleep 1")
    waiting, _ = _detached(p1, "-n", "-d", "--", "echo moved")
    assert "drained worker w1" in p1("worker", "drain", "w1", check=True).stderr
    refused = one_line_error(p1("-n", "--", "true"))
    assert "worker w1 is drained" in refused and "p worker resume w1" in refused
    assert p1("wait", running[:8]).returncode == 0
    assert _state(p1, waiting)["status"] == "queued"  # the slot is free, yet it waits
    assert re.search(r"^w1 .* drained", p1("worker", "ls", check=True).stdout, re.MULTILINE)
    p1("worker", "resume", "w1", check=True)
    assert p1("wait", waiting[:8]).returncode == 0
    assert p1("-n", "--", "true").returncode == 0


def test_attaching_to_a_queued_job_attaches_when_it_starts(p1: PClient) -> None:
    p1("worker", "set", "w1", "--slots", "1", check=True)
    blocker, _ = _detached(p1, "-n", "-d", "--", "sleep 60")
    screen = Screen(p1)
    try:
        window = screen.start("-n", "--", "echo started-now; sleep 1; exit 4")
        screen.wait_for(window, r"p: queued on w1, position 1")
        queued = [job["id"] for job in p1.jobs() if job["id"] != blocker][0]
        other = screen.start("attach", queued[:8])
        screen.wait_for(other, r"p: queued on w1, position 1")
        # The link breaks while they wait: they reconnect and wait on.
        p1.close_masters()
        for target in (window, other):
            screen.wait_for(target, r"p: the link to w1 is back; waiting for job [0-9a-f]{8} to start again")
        p1("stop", blocker[:8], "-t", "1", check=True)
        for target in (window, other):
            screen.wait_for(target, r"started-now")
        screen.wait_for(window, r"--- Job done \[exit 4\]")
        screen.keys(window, "x")
        screen.wait_for(window, r"p-exit=4")
    finally:
        screen.close()


def test_a_worker_that_requires_approval_holds_jobs_until_approved(p1: PClient, tmp_path: Path) -> None:
    assert "jobs wait for `p approve`" in p1("worker", "set", "w1", "--require-approval", check=True).stderr
    approved, said = _detached(p1, "-n", "-d", "--", "echo approved")
    assert f"waits for approval on w1, position 1; `p approve {approved[:8]}`" in said
    rejected, _ = _detached(p1, "-n", "-d", "--", "touch should-not-run")
    assert _state(p1, approved)["status"] == "pending-approval"
    # Another client of the same user, who never saw these jobs, decides.
    (tmp_path / "other").mkdir()
    other = PClient(tmp_path / "other", p1.sshd)
    try:
        other.register("w1", check=True)
        pending = other("approve", check=True).stdout
        assert approved[:8] in pending and rejected[:8] in pending
        assert "approved job" in other("approve", approved[:8], check=True).stderr
        assert "rejected job" in other("reject", rejected, check=True).stderr
    finally:
        other.close()
    assert p1("wait", approved[:8]).returncode == 0
    assert p1("logs", approved[:8], check=True).stdout.strip() == "approved"
    assert p1("wait", rejected[:8]).returncode == 126
    assert _state(p1, rejected)["status"] == "rejected"
    assert not (p1.worker_home("w1") / ".p/workdirs" / rejected / "should-not-run").exists()
    p1("worker", "set", "w1", "--no-require-approval", check=True)
    assert p1("-n", "--", "echo free").stdout == "free\n"
