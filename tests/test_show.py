"""What `p` tells about jobs and brings back (issue 9, the client's half):
`p show`, the JSON schema of every `--json` output, the client's event log
and `p events`, `p rerun`, `--pull`; end to end on real workers."""

from __future__ import annotations

import json
import os
import select
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import P_BIN, PClient
from helpers import eventually, one_line_error, workdir

from p.events import worker_events
from p.output import rusage_cells
from p.schema import markdown, problems
from p.store import JobRecord
from p_protocol.jobspec import JobSpec


def _run_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _events(p: PClient, *args: str, source: str = "client") -> list[dict[str, object]]:
    """`p events --json` as objects held to the schema: those of ``source``."""
    result = p("events", "--json", *args, check=True)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    for line in lines:
        assert problems(line, "event") == []
    times = [line["time"] for line in lines]
    assert times == sorted(times)
    return [line for line in lines if line["source"] == source]


def test_docs_json_md_is_the_schema() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "json.md").read_text()
    assert markdown() in doc, "docs/json.md's tables differ: paste `python3 -m p.schema` into it"


def test_show_tells_everything_about_a_job_and_every_json_output_keeps_its_schema(p1: PClient) -> None:
    (p1.workdir / "a.txt").write_text("a\n")
    (p1.workdir / "sub").mkdir()
    (p1.workdir / "sub" / "b.txt").write_text("b" * 5000)
    p1.env["TOKEN"] = "s3cret-value"
    result = p1("-e", "LEVEL=3", "--secret", "TOKEN", "--", "cat a.txt; exit 3")
    assert result.returncode == 3, result.stderr
    (job,) = p1.jobs()
    shown = json.loads(p1("show", str(job["id"])[:6], "--json", check=True).stdout)
    assert problems(shown, "show") == []
    assert shown["command"] == "cat a.txt; exit 3" and shown["worker"] == "w1"
    assert shown["status"] == "done" and shown["exit_code"] == 3
    assert shown["env"] == {"LEVEL": "3"} and shown["secrets"] == ["TOKEN"]
    assert shown["cwd"] == "~/project"
    assert Path(str(shown["workdir"])) == workdir(p1.worker_home("w1"), str(job["id"]))
    assert (Path(str(shown["workdir"])) / "sub" / "b.txt").exists()
    assert shown["sync_files"] == 2 and int(str(shown["sync_bytes"])) > 5000
    assert shown["rerun_of"] is None
    for source in ("client", "worker"):  # the worker's log, too, through Op.EVENTS
        mine = [event for event in shown["events"] if event["source"] == source]  # type: ignore[union-attr]
        assert [event["event"] for event in mine] == ["submitted", "started", "ended"], source
        assert mine[-1]["exit_code"] == 3 and mine[-1]["worker"] == "w1"
    times = [event["time"] for event in shown["events"]]  # type: ignore[union-attr]
    assert times == sorted(times)
    assert "s3cret-value" not in json.dumps(shown)

    text = p1("show", str(job["id"]), check=True).stdout
    for line in ("command     cat a.txt; exit 3", "worker      w1", "state       done [3]", "exit status 3",
                 "env         LEVEL=3", "secrets     TOKEN", "synced      2 file(s) sent"):
        assert line in text, text
    assert f"workdir     {shown['workdir']}" in text
    # What the worker measured, as it said it; what it could not is `unknown`.
    rusage = shown["rusage"]
    assert isinstance(rusage, dict) and problems(rusage, "rusage") == []
    assert f"cpu user    {rusage['user']:.2f}s" in text and f"cpu sys     {rusage['sys']:.2f}s" in text
    assert f"wall        {rusage['wall']:.2f}s" in text
    assert ("max rss     unknown" in text) == (rusage["max_rss"] is None)

    # A job without a sync says so; `p ls --json` holds every job to the schema.
    assert p1("-n", "--", "true").returncode == 0
    listed = p1.jobs()
    assert len(listed) == 2
    for entry in listed:
        assert problems(entry, "job") == []
    unsynced = next(entry for entry in listed if entry["command"] == "true")
    assert unsynced["synced"] is False and unsynced["sync_files"] is None
    wide = p1("ls", "--wide", check=True).stdout.splitlines()
    assert wide[0].split() == ["ID", "WORKER", "CWD", "COMMAND", "STATUS", "DURATION", "CPU", "USER", "CPU", "SYS",
                               "MAX", "RSS"]
    row = next(line for line in wide if line.startswith(str(job["id"])[:8]))
    assert f"{rusage['user']:.2f}s" in row and f"{rusage['sys']:.2f}s" in row

    workers = json.loads(p1("worker", "ls", "--json", check=True).stdout)
    assert [problems(entry, "worker") for entry in workers] == [[]]
    assert workers[0]["name"] == "w1" and workers[0]["default"] is True and workers[0]["check"] is None
    checked = json.loads(p1("worker", "ls", "--check", "--json", check=True).stdout)
    assert [problems(entry, "worker") for entry in checked] == [[]]
    assert checked[0]["check"]["ok"] is True and checked[0]["check"]["free"] > 0

    assert "no job matches" in one_line_error(p1("show", "ffff"))


def test_the_event_log_holds_a_full_lifecycle_and_skips_damaged_lines(p1: PClient) -> None:
    job = _run_id(p1("-d", "-n", "--", "sleep 60"))
    assert p1("stop", job, "-t", "1").returncode == 0
    assert p1("rm", job).returncode == 0
    assert p1("-n", "--", "exit 4").returncode == 4
    ended = p1.jobs()[0]["id"]
    log = _events(p1)
    assert [(event["id"], event["event"]) for event in log] == [
        (job, "submitted"), (job, "started"), (job, "stopped"), (job, "removed"),
        (ended, "submitted"), (ended, "started"), (ended, "ended")]
    assert log[-1]["exit_code"] == 4 and log[-1]["status"] == "done" and log[-1]["source"] == "client"
    assert [event["event"] for event in _events(p1, str(ended)[:7])] == ["submitted", "started", "ended"]
    # The worker's log, merged in, holds what its agent and the job's script saw.
    on_worker = [(event["id"], event["event"]) for event in _events(p1, source="worker")
                 if event["id"] in (job, ended)]
    assert on_worker == [(job, "submitted"), (job, "started"), (job, "stopped"), (job, "ended"), (job, "removed"),
                         (ended, "submitted"), (ended, "started"), (ended, "ended")]
    assert [event["event"] for event in _events(p1, job, source="worker")][-1] == "removed"
    text = [line for line in p1("events", check=True).stdout.splitlines() if line.endswith("client")]
    assert len(text) == 7 and "ended [exit 4]" in text[-1] and str(ended)[:8] in text[-1]

    assert "not a job id" in one_line_error(p1("events", "xyz"))
    assert "no events" in one_line_error(p1("events", "abcdef"))

    path = p1.home / ".local/share/p/events.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Lines are untrusted: damaged ones are skipped with one warning.
    with path.open("a") as out:
        out.write('not json\n{"time": "soon", "event": "x", "id": "00"}\n[1]\n{"time": NaN}\n')
    result = p1("events", "--json")
    assert result.returncode == 0 and result.stdout.count('"source":"client"') == 7
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("p: skipped 4 damaged line(s) of ") and "line 8, 9, 10, 11" in warning
    # A crash mid-line (no newline yet) costs only that line, once it ends.
    with path.open("a") as out:
        out.write('{"time": 1, "event": "half')
    assert p1("-n", "--", "true").returncode == 0
    assert [event["event"] for event in _events(p1)][-3:] == ["submitted", "started", "ended"]


def test_two_clients_learning_one_end_log_it_once(p1: PClient) -> None:
    job = _run_id(p1("-d", "-n", "--", "sleep 1"))
    waiters = [subprocess.Popen([P_BIN, "wait", job], env=p1.env, cwd=p1.workdir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(3)]
    assert [waiter.wait(timeout=60) for waiter in waiters] == [0, 0, 0]
    assert [event["event"] for event in _events(p1, job)] == ["submitted", "started", "ended"]


def test_events_follow_prints_new_events_as_they_come(p1: PClient) -> None:
    follower = subprocess.Popen([P_BIN, "events", "--follow", "--json"], env=p1.env, cwd=p1.workdir,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p1("-n", "--", "true").returncode == 0
        out = b""

        def seen() -> list[tuple[str, str]]:
            """(source, event) of the new job's events printed so far."""
            (job,) = p1.jobs()
            lines = [json.loads(line) for line in out[: out.rfind(b"\n") + 1].splitlines()]
            return [(line["source"], line["event"]) for line in lines if line["id"] == job["id"]]

        def both_ended() -> bool:
            nonlocal out
            ready, _, _ = select.select([follower.stdout], [], [], 0.2)
            if ready:
                out += os.read(follower.stdout.fileno(), 65536)  # type: ignore[union-attr]
            return ("client", "ended") in seen() and ("worker", "ended") in seen()

        eventually(both_ended)
        for source in ("client", "worker"):
            assert [event for where, event in seen() if where == source] == ["submitted", "started", "ended"]
    finally:
        follower.kill()
        follower.wait()


def test_rerun_starts_the_same_job_again_with_this_directory_or_the_same_files(p1: PClient) -> None:
    (p1.workdir / "f.txt").write_text("one\n")
    p1.env["TOKEN"] = "first"
    command = 'cat f.txt; echo "$LEVEL $TOKEN"; cat runs 2>/dev/null; echo ran >> runs'
    result = p1("-e", "LEVEL=3", "--secret", "TOKEN", "--timeout", "1h", "--", command)
    assert result.stdout == "one\n3 first\n", result.stderr
    (first,) = p1.jobs()
    (p1.workdir / "f.txt").write_text("two, longer\n")  # rsync tells by size and mtime
    p1.env["TOKEN"] = "second"  # read again: no record holds it
    result = p1("rerun", str(first["id"])[:8])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "two, longer\n3 second\n"
    result = p1("rerun", "--same-files", str(first["id"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one\n3 second\nran\n"  # the first job's workdir as it left it
    third, second = p1.jobs()[:2]
    for job in (second, third):
        assert job["rerun_of"] == first["id"] and job["worker"] == "w1" and job["command"] == command
        assert job["env"] == {"LEVEL": "3"} and job["secrets"] == ["TOKEN"] and job["timeout"] == 3600
    assert third["sync_files"] is None and third["spare"] is None
    # The first job's files are its own still.
    assert (workdir(p1.worker_home("w1"), str(first["id"])) / "runs").read_text() == "ran\n"
    # Files that are gone cannot be reused: one line, no job.
    shutil.rmtree(workdir(p1.worker_home("w1"), str(second["id"])))
    message = one_line_error(p1("rerun", "--same-files", str(second["id"])))
    assert "workdir is gone" in message and "w1" in message
    assert len(p1.jobs()) == 3
    assert p1("rm", str(first["id"])).returncode == 0
    assert "no job matches" in one_line_error(p1("rerun", str(first["id"])))
    # A job that synced nothing is re-run syncing nothing.
    unsynced = _run_id(p1("-n", "-d", "--", "ls | wc -l"))
    assert p1("wait", unsynced).returncode == 0
    result = p1("rerun", unsynced)
    assert result.returncode == 0 and result.stdout == "0\n", result.stderr
    assert p1.jobs()[0]["synced"] is False and p1.jobs()[0]["rerun_of"] == unsynced


def test_pull_copies_results_back_when_p_sees_the_job_end(p1: PClient, tmp_path: Path) -> None:
    result = p1("--pull", "out/result.txt", "--pull", "logs", "--",
                "mkdir -p out logs/deep; echo R > out/result.txt; echo L > logs/deep/l.txt")
    assert result.returncode == 0, result.stderr
    assert (p1.workdir / "out" / "result.txt").read_text() == "R\n"
    assert (p1.workdir / "logs" / "deep" / "l.txt").read_text() == "L\n"
    assert "pulled out/result.txt" in result.stderr
    (job,) = p1.jobs()
    assert job["pull"] == ["out/result.txt", "logs"]

    # A path the job did not make: one line, and a job that succeeded fails.
    result = p1("-n", "--pull", "missing.txt", "--", "true")
    assert result.returncode == 1
    assert "--pull missing.txt" in result.stderr and "does not exist" in result.stderr
    # Escapes are refused before anything runs.
    before = len(p1.jobs())
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        result = p1("-n", "--pull", bad, "--", "true")
        assert result.returncode == 2 and "outside the job's workdir" in one_line_error(result)
    assert len(p1.jobs()) == before
    # The agent refuses a symlink out of the workdir too.
    result = p1("-n", "--pull", "link", "--", "ln -s /etc link")
    assert result.returncode == 1 and "leads outside" in result.stderr
    assert not (p1.workdir / "link").exists()

    # Detached: `p wait` brings back the job's paths and its own, here.
    job_id = _run_id(p1("-d", "-n", "--pull", "x.txt", "--", "sleep 1; echo X > x.txt; echo Y > y.txt"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = p1("wait", "--pull", "y.txt", job_id, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "x.txt").read_text() == "X\n" and (elsewhere / "y.txt").read_text() == "Y\n"
    assert sorted(os.listdir(elsewhere)) == ["x.txt", "y.txt"]
    assert "outside" in one_line_error(p1("wait", "--pull", "../up", job_id))


def test_a_workers_damaged_event_lines_are_skipped_with_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """A worker's log is its word: lines that are no event are skipped, its
    own spelling (`t`, `error`) is read, and its reader's heartbeats (empty
    lines) are no events."""
    job = "ab" * 16

    class Agent:
        def stream_events(self, offset: int, follow: bool) -> Iterator[bytes]:
            assert offset == 0 and not follow
            yield b'{"t": 1.5, "event": "submitted", "id": "' + job.encode() + b'"}\nnot json\n'
            yield b'{"t": 2, "event": "failed", "id": "' + job.encode() + b'", "error": "no tmux"}\n\n'
            yield b'{"t": "later", "event": "x"}\n{"t": 3, "event": "drained"}\n[1]\n'

    found, offset = worker_events(Agent(), "w9")  # type: ignore[arg-type]
    assert [(event.time, event.event, event.id, event.worker, event.reason) for event in found] == [
        (1.5, "submitted", job, "w9", None), (2, "failed", job, "w9", "no tmux"), (3, "drained", None, "w9", None)]
    assert all(problems(event.to_json(), "event") == [] for event in found)
    assert found[1].text() == "failed (no tmux)"
    assert offset == 237  # every byte read: the next follow starts there
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning == "p: skipped 3 damaged line(s) of worker w9's ~/.p/events.jsonl (line 2, 5, 7)"


def test_resource_use_is_shown_as_measured_and_never_made_up() -> None:
    record = JobRecord(id="cd" * 16, worker="w1", cwd="~", spec=JobSpec("true"), status="done", exit_code=0)
    assert rusage_cells(record) == ("unknown", "unknown", "unknown")  # an older worker measured nothing
    record.rusage = {"wall": 2.5, "user": 1.25, "sys": 0.5, "max_rss": None}
    assert rusage_cells(record) == ("1.25s", "0.50s", "unknown")  # peak memory: the worker could not tell
    record.rusage["max_rss"] = 210 << 20
    assert rusage_cells(record) == ("1.25s", "0.50s", "210 MiB")
    record.status = "running"
    assert rusage_cells(record) == ("-", "-", "-")


def test_a_timed_out_job_is_a_timeout_event_on_both_sides(p1: PClient) -> None:
    result = p1("-n", "--timeout", "1s", "--", "sleep 30")
    assert result.returncode == 124, result.stderr
    (job,) = p1.jobs()
    assert job["status"] == "timeout"
    shown = json.loads(p1("show", str(job["id"]), "--json", check=True).stdout)
    mine = [(event["event"], event["exit_code"]) for event in shown["events"] if event["source"] == "client"]
    assert mine == [("submitted", None), ("started", None), ("timeout", 124)]
    assert "timeout" in [event["event"] for event in shown["events"] if event["source"] == "worker"]
