"""What the worker holds a job to and records of it (issue 9): its event
log, its timeout, its output cap and its resource use, end to end on a real
worker."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import PClient


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
    times = [event["t"] for event in events]
    assert times == sorted(times) and all(isinstance(t, (int, float)) for t in times)
    log = Path(p1.worker_home("w1")) / ".p" / "events.jsonl"
    assert oct(log.stat().st_mode & 0o777) == "0o600"
