"""What the worker holds a job to and records of it (issue 9): its event
log, its timeout, its output cap and its resource use, end to end on a real
worker."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

from conftest import PClient
from helpers import eventually, job_dir, worker_processes

from p_protocol import STOP_GRACE
from p_protocol.layout import JobFile


def _events(p: PClient, worker: str = "w1") -> list[dict[str, object]]:
    path = p.worker_home(worker) / ".p" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _of(events: list[dict[str, object]], job_id: str) -> list[str]:
    return [str(event["event"]) for event in events if event.get("id") == job_id]


def test_the_worker_logs_every_transition_of_a_job_in_order(p1: PClient) -> None:
    done = p1("-n", "-d", "--", "exit 3", check=True).stdout.strip()
    assert p1("wait", done).returncode == 3
    stopped = p1("-n", "-d", "--", "sleep 60", check=True).stdout.strip()
    p1("stop", stopped, check=True)
    p1("rm", done, check=True)
    events = _events(p1)
    assert _of(events, done) == ["submitted", "started", "ended", "removed"]
    assert _of(events, stopped) == ["submitted", "started", "stopped", "ended"]
    # The workers serve every test of the session: their logs hold others' jobs too.
    ends = {event["id"]: event["exit_code"] for event in events
            if event["event"] == "ended" and event["id"] in (done, stopped)}
    assert ends == {done: 3, stopped: 143}
    times = [event["t"] for event in events if event.get("id") in (done, stopped)]
    assert times == sorted(times) and all(isinstance(t, (int, float)) for t in times)
    log = Path(p1.worker_home("w1")) / ".p" / "events.jsonl"
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def _agent_pid(p: PClient, worker: str = "w1") -> int:
    from p_protocol import VERSION

    return int((p.worker_home(worker) / ".p" / "run" / f"agent-{VERSION}.pid").read_text())


def test_a_timeout_holds_with_no_client_and_across_an_agent_restart(p1: PClient) -> None:
    job_id = p1("-n", "-d", "--timeout", "3s", "--", "echo started; sleep 6071", check=True).stdout.strip()
    # Nobody watches: no client, no SSH master, and the agent killed outright.
    p1.close_masters()
    os.kill(_agent_pid(p1), signal.SIGKILL)
    job = job_dir(p1.worker_home("w1"), job_id)
    eventually(lambda: (job / JobFile.EXIT_CODE).exists(), timeout=30)
    assert (job / JobFile.EXIT_CODE).read_text().strip() == "124"
    assert eventually(lambda: not worker_processes(p1, "w1", "sleep 6071"))
    result = p1("wait", job_id)  # starts a new agent
    assert result.returncode == 124, result.stderr
    assert re.search(rf"p: job {job_id[:8]} timed out \[exit 124\] after 0:00:0[3-5] on w1", result.stderr)
    (record,) = p1.jobs()
    assert record["status"] == "timeout" and record["exit_code"] == 124 and record["timeout"] == 3
    assert "started" in p1("logs", job_id).stdout
    events = _events(p1)
    assert _of(events, job_id) == ["submitted", "started", "timeout", "ended"]
    assert [event["after"] for event in events if event.get("id") == job_id and event["event"] == "timeout"] == [3]


def test_a_streamed_job_past_its_timeout_exits_124_and_one_that_ignores_sigterm_is_killed(p1: PClient) -> None:
    result = p1("-n", "--timeout", "1.5s", "--", "echo hi; sleep 60")
    # The job's shell may say how its command ended ("Terminated"), as under `p stop`.
    assert result.returncode == 124 and result.stdout.startswith("hi\n"), result.stderr
    began = time.monotonic()
    result = p1("-n", "--timeout", "1s", "--", "trap '' TERM; echo stubborn; sleep 60")
    took = time.monotonic() - began
    assert result.returncode == 124 and result.stdout.startswith("stubborn\n"), result.stderr
    assert STOP_GRACE <= took < STOP_GRACE + 15  # SIGKILL after the grace `p stop` uses
    assert [job["status"] for job in p1.jobs()] == ["timeout", "timeout"]


def test_a_job_that_ends_before_its_timeout_leaves_no_watchdog(p1: PClient) -> None:
    result = p1("-n", "--timeout", "1h7s", "--", "exit 5")
    assert result.returncode == 5
    (record,) = p1.jobs()
    assert record["status"] == "done" and record["timeout"] == 3607
    assert eventually(lambda: not worker_processes(p1, "w1", "sleep 3607"))
    assert "timeout" not in _of(_events(p1), str(record["id"]))


# Allocates (and touches) 210 MiB, holds it a moment, then burns CPU in the shell.
HUNGRY = ("python3 -c 'import time; held = b\"x\" * (210 << 20); time.sleep(1.5)'; "
          "i=0; while [ $i -lt 200000 ]; do i=$((i + 1)); done")


def test_a_finished_job_records_what_its_processes_used(p1: PClient) -> None:
    result = p1("-n", "--", HUNGRY)
    assert result.returncode == 0, result.stderr
    detached = p1("-n", "-d", "--", HUNGRY, check=True).stdout.strip()
    assert p1("wait", detached).returncode == 0
    records = p1.jobs()
    assert len(records) == 2
    for record in records:
        used = record["rusage"]
        assert isinstance(used, dict), record
        assert 210 << 20 < used["max_rss"] < 1 << 30
        assert used["user"] > 0 and used["sys"] >= 0
        assert used["wall"] >= 1.5 and used["wall"] <= record["duration"] + 1
        job = job_dir(p1.worker_home("w1"), str(record["id"]))
        assert int((job / JobFile.PEAK_RSS).read_text()) == used["max_rss"]
    # A job too short for any sample: CPU and wall, and no made-up peak.
    p1("-n", "--", "true", check=True)
    (quick,) = [record for record in p1.jobs() if record["command"] == "true"]
    assert quick["rusage"]["max_rss"] is None or quick["rusage"]["max_rss"] > 0


# 50 MiB of "0123456789\n" lines, then the job goes on: it makes a file and exits 3.
FLOOD = "yes 0123456789 | head -c 52428800; echo; touch went-on; exit 3"
# What reaches the pane: each "\n" as "\r\n" (a terminal's), 4766254 whole lines
# plus the partial one that `echo` ends.
FLOOD_PANE_BYTES = 52428800 + 52428800 // 11 + 2
CAP = 10 << 20


def test_output_stops_at_the_cap_with_one_line_saying_what_was_dropped(p1: PClient) -> None:
    job_id = p1("-n", "-d", "--max-output", "10M", "--", FLOOD, check=True).stdout.strip()
    p1.close_masters()  # nobody watches while it floods
    job = job_dir(p1.worker_home("w1"), job_id)
    eventually(lambda: (job / JobFile.EXIT_CODE).exists(), timeout=120)
    assert (p1.worker_home("w1") / ".p" / "workdirs" / job_id / "went-on").exists()  # it kept running
    dropped = FLOOD_PANE_BYTES - CAP
    line = f"\r\n[p: output capped by --max-output: kept the first {CAP} bytes, dropped {dropped} more]\r\n"
    log = (job / JobFile.OUTPUT).read_bytes()
    log_end = int((job / JobFile.LOG_END).read_text())
    assert log_end == CAP + len(line) and log[CAP:log_end] == line.encode()
    assert log[:22] == b"0123456789\r\n0123456789"
    assert len(log) < CAP + 1000  # then only the end marker
    assert p1("wait", job_id).returncode == 3
    shown = p1("logs", job_id)
    assert shown.returncode == 0
    assert shown.stdout.endswith(f"[p: output capped by --max-output: kept the first {CAP} bytes, "
                                 f"dropped {dropped} more]\n")
    (record,) = p1.jobs()
    assert record["max_output"] == CAP and record["exit_code"] == 3
    # Streamed as it runs: the same output, and p ends with the job.
    result = p1("-n", "--max-output", "10M", "--", FLOOD, timeout=180)
    assert result.returncode == 3 and result.stdout == shown.stdout
    # Under the cap nothing changes: no line, every byte.
    small = p1("-n", "--max-output", "1K", "--", "printf 'a\\tb\\n\\n'; printf 'no newline'")
    assert small.returncode == 0 and small.stdout == "a\tb\n\nno newline"
