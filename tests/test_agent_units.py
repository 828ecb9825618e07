"""The agent's pure parts, with a fake engine behind the executor seam: the
job view per state, the end marker in a stream, copying a job's log.
The end-to-end tests run the real tmux engine on real workers."""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Container
from pathlib import Path

import pytest
from p_agent.executor import JobStart, Verdict
from p_agent.jobs import Jobs
from p_agent.server import Agent, _split_marker_start

from p_protocol.jobspec import JobSpec
from p_protocol.layout import JobFile, Layout
from p_protocol.states import State
from p_protocol.wire import Op, check_reply

MARKER = b"\x1b]7777;p-end-fake\x07"


class FakeExecutor:
    """Holds what it started until told otherwise; records signals. Its jobs
    ignore SIGTERM and end at SIGKILL, recording their end as a job script
    does."""

    name = "fake"

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.signals: list[tuple[str, int]] = []
        self.job_dirs: dict[str, str] = {}

    def setup(self) -> None:
        pass

    def start(self, job: JobStart) -> None:
        self.held.add(job.job_id)
        self.job_dirs[job.job_id] = job.job_dir

    def alive(self) -> set[str]:
        return set(self.held)

    def verdict(self, job_id: str, alive: Container[str]) -> Verdict:
        return Verdict(None)

    def signal(self, job_id: str, signum: int) -> None:
        self.signals.append((job_id, signum))
        if signum == 9:
            Path(self.job_dirs[job_id], JobFile.EXIT_CODE).write_text("137\n")

    def attach_argv(self, job_id: str, ctrl_c_detaches: bool = False) -> list[str] | None:
        return ["attach", job_id] if job_id in self.held else None

    def close(self, job_id: str) -> None:
        self.held.discard(job_id)

    def end_marker(self, job_id: str) -> bytes:
        return MARKER

    def retire(self) -> None:
        pass


@pytest.fixture
def jobs(tmp_path: Path) -> Jobs:
    jobs = Jobs(Layout(str(tmp_path / ".p")), FakeExecutor())
    jobs.ensure_layout()
    return jobs


def started(jobs: Jobs) -> tuple[str, Path]:
    job_id = uuid.uuid4().hex
    jobs.start(job_id, JobSpec("make test"), "~/src", "w1", 80, 24, tty=False, expect_client=False)
    return job_id, Path(jobs.layout.job_dir(job_id))


def test_the_job_view_follows_the_files_and_the_engine(jobs: Jobs) -> None:
    job_id, job_dir = started(jobs)
    assert (job_dir / JobFile.COMMAND).read_text() == "make test"
    views = [jobs.view(job_id)]
    assert views[0] == {"id": job_id, "state": "running", "started_at": views[0]["started_at"],  # type: ignore[index]
                        "ended_at": None, "exit_code": None, "attachable": True}
    jobs.executor.close(job_id)  # the engine let go without an exit code: lost
    views.append(jobs.view(job_id))
    assert views[-1]["state"] == "lost" and not views[-1]["attachable"]  # type: ignore[index]
    (job_dir / JobFile.ENDED_AT).write_text("1700000000.250\n")
    (job_dir / JobFile.EXIT_CODE).write_text("3\n")
    views.append(jobs.view(job_id))
    assert views[-1]["state"] == "done" and views[-1]["exit_code"] == 3  # type: ignore[index]
    assert views[-1]["ended_at"] == 1700000000.25  # type: ignore[index]
    (job_dir / JobFile.STOPPED).write_text("")
    views.append(jobs.view(job_id))
    assert views[-1]["state"] == "stopped"  # type: ignore[index]
    for view in views:  # every one is a reply the client accepts
        check_reply(Op.WAIT, {"job": view})
    assert jobs.view(uuid.uuid4().hex) is None


def test_stop_signals_through_the_engine_and_records_the_stop(jobs: Jobs) -> None:
    job_id, job_dir = started(jobs)
    view = jobs.stop(job_id, grace=0.05)
    assert [signum for _, signum in jobs.executor.signals] == [15, 9]  # type: ignore[attr-defined]
    assert view is not None and view["state"] == "stopped" and view["exit_code"] == 128 + 9
    assert jobs.attach_argv(job_id) is None


def test_a_marker_split_across_reads_is_held_back() -> None:
    assert _split_marker_start(b"abc" + MARKER[:4], MARKER) == (b"abc", MARKER[:4])
    assert _split_marker_start(b"abc\x1b", MARKER) == (b"abc", b"\x1b")
    assert _split_marker_start(b"abc", MARKER) == (b"abc", b"")


@pytest.mark.parametrize("log_end", [None, 3])
def test_a_log_is_copied_up_to_the_jobs_own_output(jobs: Jobs, log_end: int | None) -> None:
    job_id, job_dir = started(jobs)
    (job_dir / JobFile.OUTPUT).write_bytes(b"hello" + MARKER + b"--- Job done ---")
    if log_end is not None:
        (job_dir / JobFile.LOG_END).write_text(f"{log_end}\n")
    (job_dir / JobFile.EXIT_CODE).write_text("0\n")
    out = io.BytesIO()
    with open(os.path.join(job_dir, JobFile.OUTPUT), "rb") as log:
        Agent(jobs.layout, jobs)._copy_log(job_id, log, 0, True, out)
    assert out.getvalue() == (b"hello" if log_end is None else b"hel")


def test_clean_leaves_a_workdir_being_synced_alone(jobs: Jobs) -> None:
    """Between prepare and start a workdir has no job yet: a `p worker clean`
    meanwhile must not delete it under the client's rsync."""
    syncing, finished = uuid.uuid4().hex, started(jobs)[0]
    jobs.prepare(syncing, "0123456789abcdef")
    Path(jobs.layout.workdir(syncing), "file").write_text("being synced")
    jobs.executor.close(finished)
    Path(jobs.layout.job_dir(finished), JobFile.EXIT_CODE).write_text("0\n")
    removed = jobs.clean()
    assert removed["jobs"] == [finished]
    assert Path(jobs.layout.workdir(syncing), "file").read_text() == "being synced"
    assert not os.path.exists(jobs.layout.workdir(finished))


def test_a_pgid_file_naming_a_reused_number_is_not_obeyed(tmp_path: Path) -> None:
    """After a reboot (or long after a job), the number in its pgid file may
    name another process group: the tmux engine must neither count the job
    as running nor signal that group (issue 17, point 6, for jobs)."""
    import subprocess
    import time

    from p_agent.files import is_jobs_group

    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / JobFile.STARTED_AT).write_text(f"{time.time():.3f}")
        assert is_jobs_group(other.pid, str(job_dir))  # started when the job did: its own
        (job_dir / JobFile.STARTED_AT).write_text(f"{time.time() - 3600:.3f}")
        assert not is_jobs_group(other.pid, str(job_dir))  # a job of an hour ago: a reused number
    finally:
        other.kill()
        other.wait()
    assert not is_jobs_group(other.pid, str(job_dir))


def test_the_memory_sampler_leaves_a_lost_jobs_reused_number_alone(tmp_path: Path) -> None:
    """A job lost without an end (its session killed, a reboot) keeps a
    pgid file whose number may name another's processes by now: their
    memory is never taken for the job's peak."""
    import subprocess
    import time

    from p_agent.rusage import PeakSampler

    layout = Layout(str(tmp_path / ".p"))
    other = subprocess.Popen(["python3", "-c", "b = bytearray(64 << 20); import time; time.sleep(30)"],
                             start_new_session=True)
    try:
        from p_agent.rusage import _high_water

        deadline = time.monotonic() + 10
        while (_high_water(other.pid) or 0) < 64 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        ours, lost = (Path(layout.job_dir(uuid.uuid4().hex)) for _ in range(2))
        for job_dir, started in ((ours, time.time()), (lost, time.time() - 3600)):
            job_dir.mkdir(parents=True)
            (job_dir / JobFile.STARTED_AT).write_text(f"{started:.3f}")
            (job_dir / JobFile.PGID).write_text(f"{other.pid}\n")
        PeakSampler(layout).sample()
    finally:
        other.kill()
        other.wait()
    assert int((ours / JobFile.PEAK_RSS).read_text()) >= 64 << 20  # a job of now: its own group, sampled
    assert not (lost / JobFile.PEAK_RSS).exists()  # a job of an hour ago: another's group


def test_the_event_log_streams_whole_lines_from_an_offset(jobs: Jobs, monkeypatch: pytest.MonkeyPatch) -> None:
    from p_agent import events

    job_id, _ = started(jobs)
    jobs.stop(job_id, grace=0.05)
    log = Path(jobs.layout.events_log)
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    lines = log.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["event"] for line in lines] == ["submitted", "started", "stopped"]
    with log.open("ab") as out:
        out.write(b'{"t":1,"event":"cut')  # a writer died mid-line: held back, never sent
    agent = Agent(jobs.layout, jobs)
    for offset, expected in ((0, lines), (len(lines[0]), lines[1:]), (len(lines[0]) + 3, lines[2:])):
        out = io.BytesIO()
        agent.dispatch({"op": "events", "offset": offset}, out)
        header, _, body = out.getvalue().partition(b"\n")
        assert check_reply(Op.EVENTS, json.loads(header)) == {"size": log.stat().st_size}
        assert body == b"".join(expected), offset
    # Following: an empty line while nothing happens; a client that left ends it.
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.0)

    class Leaves(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            if data == b"\n":
                raise BrokenPipeError
            return super().write(data)

    left = Leaves()
    agent.dispatch({"op": "events", "offset": 0, "follow": True}, left)
    assert left.getvalue().endswith(b"".join(lines))
    with pytest.raises(ValueError):
        events.line("queued", job_id, note="x" * 5000)


def test_squeue_lines_become_checked_values() -> None:
    from p_agent.slurm import SlurmJob, parse_squeue

    text = ("12|PENDING|p-1a2b3c4d||Resources\n"
            "13|RUNNING|some|odd|name|node[1-2]|None\n"
            "garbage line\n"
            "x|RUNNING|p-x|n1|None\n"
            "14|TIMEOUT|p-9f|n3|TimeLimit\x1b[31m\n")
    assert parse_squeue(text) == {"12": SlurmJob("PENDING", None, "Resources"),
                                  "13": SlurmJob("RUNNING", "node[1-2]", None),
                                  "14": SlurmJob("TIMEOUT", "n3", "TimeLimit[31m")}


def test_sbatch_resources_from_the_job_spec() -> None:
    from p_agent.slurm import sbatch_resources

    from p_protocol.jobspec import JobSpec

    spec = JobSpec("true", gpus=2, cpus=4, mem=(1 << 30) + 1, nodes=3, timeout=61.0)
    assert sbatch_resources(spec) == ["--gpus=2", "--cpus-per-task=4", "--mem=1025M", "--nodes=3", "--time=3"]
    assert sbatch_resources(JobSpec("true")) == []


def test_cpu_seconds_come_from_the_shells_times_around_the_job() -> None:
    from p_agent.rusage import children_cpu

    dash = "0m0.004000s 0m0.001000s\n0m0.010000s 0m0.020000s\n0m0.005000s 0m0.002000s\n1m2.510000s 0m0.520000s\n"
    assert children_cpu(dash) == (62.5, 0.5)
    busybox = "0m 0.00s 0m 0.00s\n0m 0.01s 0m 0.00s\n0m 0.00s 0m 0.00s\n0m 3.01s 0m 0.40s\n"
    assert children_cpu(busybox) == (3.0, 0.4)
    assert children_cpu("0m0.004s 0m0.001s\n0m0.010s 0m0.020s\n") is None  # the job's script died first
    assert children_cpu(None) is None and children_cpu("garbage") is None


def test_the_tmux_server_outlives_its_last_job_until_the_agent_retires(tmp_path: Path) -> None:
    """A real tmux: the server stays up between jobs (the next start costs
    no server), and `retire` ends it only once no session is left."""
    from p_agent.tmux import TmuxExecutor

    layout = Layout(str(tmp_path / ".p"))
    os.makedirs(os.path.dirname(layout.tmux_socket), mode=0o700)
    engine = TmuxExecutor(layout)
    engine.setup()

    def server_up() -> bool:
        return engine.tmux.run("list-sessions", check=False).returncode == 0

    try:
        engine.tmux.run("new-session", "-d", "-s", "p-held", "sleep 60")
        engine.retire()
        assert engine.tmux.sessions() == {"p-held"}  # a job holds it: kept
        engine.tmux.kill_session("p-held")
        assert server_up() and engine.tmux.sessions() == set()  # no job, still up
        engine.retire()
        assert not server_up()
    finally:
        engine.kill_server()


def test_the_event_log_is_set_aside_when_full_and_a_follower_moves_on(
        jobs: Jobs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its size the log becomes events.jsonl.1 (the one before is
    dropped); a follower from before goes on in the new file, and an offset
    taken in the old one starts the new one from its beginning."""
    import threading
    import time

    from p_agent import events

    monkeypatch.setattr(events, "ROTATE_AT", 2000)
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.1)
    log = Path(jobs.layout.events_log)
    for n in range(30):
        events.append(jobs.layout, "queued", uuid.uuid4().hex, position=n)
    assert log.stat().st_size <= 2000 + 200 and Path(f"{log}.1").stat().st_size > 2000

    class Follower(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            if b'"position":1000' in self.getvalue():
                raise BrokenPipeError  # it saw the last one: leave
            return super().write(data)

    follower = Follower()
    agent = Agent(jobs.layout, jobs)
    thread = threading.Thread(target=agent.dispatch, args=({"op": "events", "offset": log.stat().st_size,
                                                            "follow": True}, follower))
    thread.start()
    time.sleep(0.2)
    for n in range(100, 130):  # sets the log aside again
        events.append(jobs.layout, "queued", uuid.uuid4().hex, position=n)
    events.append(jobs.layout, "queued", uuid.uuid4().hex, position=1000)
    thread.join(timeout=10)
    assert not thread.is_alive()
    seen = [json.loads(line)["position"] for line in follower.getvalue().splitlines()[1:] if line.strip()]
    assert seen == [*range(100, 130), 1000]
    out = io.BytesIO()
    agent.dispatch({"op": "events", "offset": 10 ** 6}, out)  # an offset in a file set aside
    assert out.getvalue().partition(b"\n")[2] == log.read_bytes()


def test_two_agents_share_one_queue_and_neither_loses_the_others_jobs(tmp_path: Path) -> None:
    """Agents of two versions may serve one worker side by side, each for
    its own clients: every change to the queue starts from what the file
    holds, so no job is lost and the slots are never overfilled."""
    layout = Layout(str(tmp_path / ".p"))
    old, new = Jobs(layout, FakeExecutor()), Jobs(layout, FakeExecutor())
    old.ensure_layout()
    old.queue.configure(1, None, None, None)
    first, _ = started(old)  # takes the one slot
    second, _ = started(new)  # waits
    third, _ = started(old)  # waits behind it

    def queue() -> dict[str, object]:
        return json.loads(Path(layout.queue_file).read_text())

    assert list(queue()["running"]) == [first]  # type: ignore[arg-type]
    assert [entry["id"] for entry in queue()["waiting"]] == [second, third]  # type: ignore[index, union-attr]
    Path(layout.job_dir(first), JobFile.EXIT_CODE).write_text("0\n")
    new.queue.schedule()  # the slot is free: the next in line starts, whoever took it
    assert list(queue()["running"]) == [second] and new.executor.held == {second}  # type: ignore[attr-defined]
    old.queue.schedule()  # no room: the third waits on, in both agents' eyes
    assert [entry["id"] for entry in queue()["waiting"]] == [third]  # type: ignore[index, union-attr]
    assert old.queue.state(third) == new.queue.state(third) == (State.QUEUED, 1)


def test_a_jobs_session_is_open_while_its_script_runs_and_only_that_script(tmp_path: Path) -> None:
    """The tmux engine asks /proc whether a job's script (its session's one
    process) runs: by the pid the script wrote, and only if that process
    runs this job's script; a pid that runs something else now leaves it
    to tmux."""
    import subprocess

    from p_agent.tmux import _script_runs

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    assert _script_runs(str(job_dir)) is None  # not said yet: tmux is asked
    # As run.sh does: the script says its own pid, once it runs (a pid
    # written for it from outside may name a process not yet running it).
    (job_dir / JobFile.SCRIPT).write_text(f'echo $$ > "$1/{JobFile.SCRIPT_PID}"\nsleep 30\n')
    script = subprocess.Popen(["sh", str(job_dir / JobFile.SCRIPT), str(job_dir)])
    other = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = job_dir / JobFile.SCRIPT_PID
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().endswith("\n")):
            assert time.monotonic() < deadline, "the script never said its pid"
            time.sleep(0.01)
        assert pid_file.read_text() == f"{script.pid}\n"
        assert _script_runs(str(job_dir)) is True
        (job_dir / JobFile.SCRIPT_PID).write_text(f"{other.pid}\n")  # its pid reused since
        assert _script_runs(str(job_dir)) is None
        (job_dir / JobFile.SCRIPT_PID).write_text("not a pid\n")
        assert _script_runs(str(job_dir)) is None
        (job_dir / JobFile.SCRIPT_PID).write_text(f"{script.pid}\n")
        script.kill()
        script.wait()
        assert _script_runs(str(job_dir)) is False  # it ended: the session closes with it
    finally:
        for process in (script, other):
            process.kill()
            process.wait()
