"""The worker's queue (agent/p_agent/queue.py) with a fake engine: order,
slots, GPUs, holds, and what a restarted agent finds. End to end on real
workers: tests/test_queue.py."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from p_agent.jobs import Jobs
from test_agent_units import FakeExecutor

from p_protocol import ProtocolError
from p_protocol.jobspec import JobSpec
from p_protocol.layout import JobFile, Layout


def _jobs(tmp_path: Path) -> tuple[Jobs, FakeExecutor]:
    engine = FakeExecutor()
    jobs = Jobs(Layout(str(tmp_path / ".p")), engine)
    jobs.ensure_layout()
    return jobs, engine


def _submit(jobs: Jobs, gpus: int = 0) -> str:
    job_id = uuid.uuid4().hex
    jobs.start(job_id, JobSpec("true", gpus=gpus), "~", "w1", 80, 24, tty=False, expect_client=False)
    return job_id


def _end(jobs: Jobs, engine: FakeExecutor, job_id: str) -> None:
    Path(jobs.layout.job_dir(job_id), JobFile.EXIT_CODE).write_text("0\n")
    engine.held.discard(job_id)


def _states(jobs: Jobs, job_ids: list[str]) -> list[str]:
    return [jobs.view(job_id)["state"] for job_id in job_ids]  # type: ignore[index]


def test_slots_are_filled_in_order_and_freed_by_ended_jobs(tmp_path: Path) -> None:
    jobs, engine = _jobs(tmp_path)
    jobs.queue.configure(2, None, None, None)
    ids = [_submit(jobs) for _ in range(5)]
    assert _states(jobs, ids) == ["running", "running", "queued", "queued", "queued"]
    assert [jobs.view(job_id)["position"] for job_id in ids[2:]] == [1, 2, 3]  # type: ignore[index]
    _end(jobs, engine, ids[1])
    jobs.queue.schedule()
    assert _states(jobs, ids) == ["running", "done", "running", "queued", "queued"]
    # Taken out of the queue by `stop`: it never ran, and the next moves up.
    assert jobs.stop(ids[3], 1.0)["state"] == "stopped"  # type: ignore[index]
    assert not Path(jobs.layout.job_dir(ids[3]), JobFile.STARTED_AT).exists()
    assert jobs.view(ids[4])["position"] == 1  # type: ignore[index]


def test_gpus_are_given_out_and_a_big_job_is_not_passed_over(tmp_path: Path) -> None:
    jobs, engine = _jobs(tmp_path)
    jobs.queue.configure(None, [0, 1, 2], None, None)
    first = _submit(jobs, gpus=2)
    big = _submit(jobs, gpus=2)
    small = _submit(jobs, gpus=1)
    assert _states(jobs, [first, big, small]) == ["running", "queued", "queued"]
    assert jobs.view(first)["gpu_ids"] == [0, 1]  # type: ignore[index]
    assert "export CUDA_VISIBLE_DEVICES=0,1" in Path(jobs.layout.job_dir(first), JobFile.ENV).read_text()
    _end(jobs, engine, first)
    jobs.queue.schedule()
    assert _states(jobs, [big, small]) == ["running", "running"]
    assert jobs.view(small)["gpu_ids"] == [2]  # type: ignore[index]
    with pytest.raises(ProtocolError, match="asks for 4 GPU"):
        _submit(jobs, gpus=4)


def test_drain_holds_the_queue_and_refuses_new_jobs(tmp_path: Path) -> None:
    jobs, engine = _jobs(tmp_path)
    jobs.queue.configure(1, None, None, None)
    running, waiting = _submit(jobs), _submit(jobs)
    jobs.queue.configure(None, None, True, None)
    with pytest.raises(ProtocolError, match="p worker resume w1"):
        _submit(jobs)
    _end(jobs, engine, running)
    jobs.queue.schedule()
    assert _states(jobs, [waiting]) == ["queued"]
    jobs.queue.configure(None, None, False, None)
    assert _states(jobs, [waiting]) == ["running"]


def test_jobs_pending_approval_hold_up_nobody_until_approved_or_rejected(tmp_path: Path) -> None:
    jobs, _ = _jobs(tmp_path)
    jobs.queue.configure(None, None, None, True)
    held, rejected = _submit(jobs), _submit(jobs)
    jobs.queue.configure(None, None, None, False)
    free = _submit(jobs)
    assert _states(jobs, [held, rejected, free]) == ["pending-approval", "pending-approval", "running"]
    assert jobs.queue.summary()["pending"] == [held, rejected]
    assert jobs.approve(held, True)["state"] == "running"  # type: ignore[index]
    view = jobs.approve(rejected, False)
    assert view is not None and view["state"] == "rejected" and view["exit_code"] == 126
    with pytest.raises(ProtocolError, match="not pending approval"):
        jobs.approve(free, True)


def test_a_restarted_agent_finds_the_queue_and_its_settings(tmp_path: Path) -> None:
    jobs, engine = _jobs(tmp_path)
    jobs.queue.configure(1, [0], None, None)
    ids = [_submit(jobs) for _ in range(3)]
    # The agent dies; its running job ends meanwhile; a new one starts.
    _end(jobs, engine, ids[0])
    again = Jobs(jobs.layout, engine)
    assert again.queue.summary()["slots"] == 1 and again.queue.gpus() == [0]
    assert _states(again, ids) == ["done", "queued", "queued"]
    again.queue.schedule(ask_engine=True)
    assert _states(again, ids) == ["done", "running", "queued"]


def test_a_damaged_queue_file_keeps_what_still_makes_sense(tmp_path: Path) -> None:
    layout = Layout(str(tmp_path / ".p"))
    Path(layout.root).mkdir()
    good = uuid.uuid4().hex
    Path(layout.queue_file).write_text(json.dumps({
        "settings": {"slots": "two", "gpus": [0, 0], "drained": True},
        "waiting": [{"id": "../etc", "gpus": 0}, {"id": good, "gpus": 1, "held": False}, 5],
        "running": {"nope": [0]}}))
    jobs = Jobs(layout, FakeExecutor())
    assert jobs.queue.settings.to_json() == {"slots": None, "gpus": None, "drained": True, "approval": False}
    assert [entry.job_id for entry in jobs.queue.waiting] == [good]
    assert jobs.queue.running == {}
    Path(layout.queue_file).write_text("not json")
    assert Jobs(layout, FakeExecutor()).queue.waiting == ()
