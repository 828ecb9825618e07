"""What jobs leave on a worker: sessions, processes, synced copies."""

from __future__ import annotations

from conftest import PClient
from helpers import eventually, worker_processes, worker_sessions


def test_a_job_that_ends_unwatched_leaves_no_session_and_no_process(p1: PClient) -> None:
    job = p1("-n", "-d", "--", "echo hi", check=True).stdout.strip()
    assert p1("wait", job).returncode == 0
    # No "press any key" screen for nobody: run.sh, its pane and the capture end.
    eventually(lambda: f"p-{job[:8]}" not in worker_sessions(p1, "w1"))
    eventually(lambda: not worker_processes(p1, "w1", job))
    # A stream ends the same way, with nobody attached.
    assert p1("-n", "--", "echo streamed").stdout == "streamed\n"
    (streamed,) = [str(r["id"]) for r in p1.jobs() if r["id"] != job]
    eventually(lambda: f"p-{streamed[:8]}" not in worker_sessions(p1, "w1"))
    eventually(lambda: not worker_processes(p1, "w1", streamed))
    assert p1("logs", job).stdout == "hi\n"  # the job's files stay until `p rm`
