"""Attach, detach, Ctrl+C and the "Job done" screen, driven like a person
would: `p` runs in a client-side tmux, keys go in with send-keys and the
screen is read with capture-pane."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from conftest import P_BIN, PClient
from helpers import Screen, eventually, worker_sessions


def test_attached_job_shows_status_bar_done_screen_and_exit_status(screen: Screen) -> None:
    window = screen.start("--", "echo hello-from-job; sleep 3; exit 7")
    shown = screen.wait_for(window, r"\[running\] \d:\d\d:\d\d")
    assert "hello-from-job" in shown
    # The status bar: short id, worker, command, status, elapsed time.
    assert re.search(r"p-[0-9a-f]{8} w1 echo hello-from-job; sleep 3; exit 7 \[running\] 0:00:0\d", shown)
    done = screen.wait_for(window, r"--- Job done \[exit 7\]\. Press any key to detach\. ---")
    assert "hello-from-job" in done
    screen.keys(window, "x")
    after = screen.wait_for(window, r"p-exit=7")
    assert re.search(r"p: job [0-9a-f]{8} done \[exit 7\]", after)
    (record,) = screen.p.jobs()
    assert record["status"] == "done" and record["exit_code"] == 7


def test_detach_keeps_the_job_and_attach_returns_to_it(screen: Screen) -> None:
    window = screen.start("--", "echo first-run; sleep 120")
    screen.wait_for(window, r"\[running\]")
    screen.keys(window, "C-b", "d")
    detached = screen.wait_for(window, r"p-exit=0")
    assert "detached from job" in detached
    (record,) = screen.p.jobs()
    assert record["status"] == "running"
    job = str(record["id"])

    again = screen.start("attach", job[:5])
    shown = screen.wait_for(again, r"\[running\]")
    assert "first-run" in shown  # the same session, its scrollback intact
    # Ctrl+C goes to the job as SIGINT, as in a local terminal.
    screen.keys(again, "C-c")
    screen.wait_for(again, r"--- Job done \[exit 130\]")
    screen.keys(again, "Enter")
    screen.wait_for(again, r"p-exit=130")
    (record,) = screen.p.jobs()
    assert record["status"] == "done" and record["exit_code"] == 130


def test_attach_to_a_job_that_ended_unwatched_shows_its_output_and_status(screen: Screen) -> None:
    p = screen.p
    job = p("-d", "--", "echo quick-output; exit 5", check=True).stdout.strip()
    p("wait", job)
    # Nobody was attached at its end: its session closed by itself...
    eventually(lambda: not worker_sessions(p, "w1") & {f"p-{job[:8]}"})
    # ...and attach shows what the screen would have: output and status.
    window = screen.start("attach", job)
    shown = screen.wait_for(window, r"p-exit=5")
    assert "quick-output" in shown and re.search(r"p: job [0-9a-f]{8} done \[exit 5\]", shown)
    off_terminal = p("attach", job)
    assert off_terminal.returncode == 5
    assert off_terminal.stdout == "quick-output\n" and "done [exit 5]" in off_terminal.stderr


def test_leaving_the_done_screen_closes_the_session(screen: Screen) -> None:
    window = screen.start("--", "echo bye")
    screen.wait_for(window, r"--- Job done \[exit 0\]")
    (record,) = screen.p.jobs()
    assert f"p-{str(record['id'])[:8]}" in worker_sessions(screen.p, "w1")
    screen.keys(window, "C-b", "d")  # detaching instead of pressing a key
    after = screen.wait_for(window, r"p-exit=0")
    assert re.search(r"p: job [0-9a-f]{8} done \[exit 0\]", after)
    eventually(lambda: not worker_sessions(screen.p, "w1") & {f"p-{str(record['id'])[:8]}"})


def test_not_a_terminal_never_attaches(p1: PClient) -> None:
    # Piped: the output streams, no tmux client, and the exit status is the job's.
    command = f"set -o pipefail; {shlex.quote(P_BIN)} -- 'echo piped; exit 2' | cat"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=p1.env,
                            cwd=p1.workdir, timeout=60)
    assert result.stdout == "piped\n"
    assert result.returncode == 2


def test_sync_progress_has_one_total_and_a_speed(screen: Screen) -> None:
    p = screen.p
    sizes = 0
    for i in range(2000):
        sub = p.workdir / f"d{i // 100}"
        sub.mkdir(exist_ok=True)
        data = os.urandom(20_000)
        (sub / f"f{i}.bin").write_bytes(data)
        sizes += len(data)
    # A slow link (10 MB/s), so the sync lasts seconds: the bar shows after
    # half a second, its speed once two samples are in.
    shim = p.home / "slow-link"
    shim.mkdir()
    (shim / "rsync").write_text('#!/bin/sh\nexec /usr/bin/rsync --bwlimit=10000 "$@"\n')
    (shim / "rsync").chmod(0o755)
    p.env["PATH"] = f"{shim}:{p.env['PATH']}"
    window = screen.start("--", "echo synced-and-ran")
    # Whole lines only (up to the ETA): a capture may catch one half drawn.
    bar = re.compile(r"syncing to w1 .*?[\d.]+/([\d.]+ \w?B) +(\?|[\d.]+ \w?B/s) +(?:-:--:--|\d+:\d\d:\d\d)")
    totals, speeds = set(), []

    def synced() -> bool:
        text = screen.text(window)
        for match in bar.finditer(text):
            totals.add(match[1])
            speeds.append(match[2])
        return "synced-and-ran" in text

    eventually(synced, timeout=120, interval=0.05)
    # The total is what will be sent, computed once: it never changes.
    assert totals == {f"{sizes / 1e6:.1f} MB"}, totals
    assert any(speed != "?" for speed in speeds), speeds
    screen.wait_for(window, r"--- Job done \[exit 0\]", timeout=120)


def test_status_bar_and_summary_agree_on_the_duration(screen: Screen) -> None:
    # The job ends exactly two whole seconds after the second its start fell
    # in: a duration of 1.x s, whose end falls in a later second than its
    # start's fraction would suggest.
    ends_on_the_second = ("python3 -c \"import os, time; s = float(open('../../jobs/' + "
                          "os.path.basename(os.getcwd()) + '/started_at').read()); "
                          "time.sleep(max(0.0, int(s) + 2 - time.time()))\"")
    window = screen.start("-n", "--", ends_on_the_second)
    done = screen.wait_for(window, r"\[done \[0\]\] \d+:\d\d:\d\d")
    bar = re.search(r"\[done \[0\]\] (\d+:\d\d:\d\d)", done)
    screen.keys(window, "x")
    after = screen.wait_for(window, r"p-exit=0")
    summary = re.search(r"done \[exit 0\] after (\d+:\d\d:\d\d)", after)
    assert bar and summary and bar[1] == summary[1], (bar, summary)


def test_no_ssh_chatter_after_an_attach(screen: Screen) -> None:
    p = screen.p
    # The user's own ssh config, without the tests' `LogLevel ERROR`.
    chatty = p.home / "ssh_config"
    chatty.write_text(Path(p.sshd.ssh_config).read_text().replace("    LogLevel ERROR\n", ""))
    p("worker", "register", "w1", "-n", "chatty", "--ssh-config", str(chatty), check=True)
    window = screen.start("chatty", "-n", "--", "echo hi")
    screen.wait_for(window, r"--- Job done \[exit 0\]")
    screen.keys(window, "x")
    after = screen.wait_for(window, r"p-exit=0")
    assert "Shared connection" not in after and "closed." not in after


def test_syncing_what_looks_secret_asks_once(screen: Screen) -> None:
    (screen.p.workdir / ".env").write_text("TOKEN=x\n")
    refused = screen.start("--", "echo ran")
    screen.wait_for(refused, r"\.env.*\[y/N\]")
    screen.keys(refused, "n", "Enter")
    assert "nothing synced" in screen.wait_for(refused, r"p-exit=1")
    accepted = screen.start("--", "cat .env")
    screen.wait_for(accepted, r"\[y/N\]")
    screen.keys(accepted, "y", "Enter")
    assert "TOKEN=x" in screen.wait_for(accepted, r"--- Job done \[exit 0\]")
    screen.keys(accepted, "x")
    screen.wait_for(accepted, r"p-exit=0")
    again = screen.start("--", "echo again")
    shown = screen.wait_for(again, r"--- Job done \[exit 0\]")
    assert "[y/N]" not in shown


def test_attach_works_from_a_terminal_the_worker_does_not_know(screen: Screen) -> None:
    window = screen.start("--", "echo $TERM; [ -t 0 ] && [ -t 1 ] && echo on-a-tty", term="p-unknown-terminal")
    shown = screen.wait_for(window, r"--- Job done \[exit 0\]")
    assert "tmux" in shown or "screen" in shown  # the job sees tmux's own TERM
    assert "on-a-tty" in shown  # attached runs keep the whole terminal
    screen.keys(window, "x")
    screen.wait_for(window, r"p-exit=0")


def test_an_attached_job_brings_its_pull_paths_back_when_it_ends(screen: Screen) -> None:
    window = screen.start("--pull", "made.txt", "--", "echo made > made.txt; exit 0")
    screen.wait_for(window, r"--- Job done \[exit 0\]")
    screen.keys(window, "x")
    after = screen.wait_for(window, r"p-exit=0")
    assert "pulled made.txt" in after
    assert (screen.p.workdir / "made.txt").read_text() == "made\n"


def test_an_attached_job_past_its_timeout_exits_124(screen: Screen) -> None:
    window = screen.start("-n", "--timeout", "2s", "--", "echo waiting; sleep 60")
    screen.wait_for(window, "waiting")
    screen.wait_for(window, r"--- Job done \[exit 124\]\. Press any key to detach\. ---")
    screen.keys(window, "x")
    after = screen.wait_for(window, r"p-exit=124")
    assert re.search(r"p: job [0-9a-f]{8} timed out \[exit 124\]", after)
    (record,) = screen.p.jobs()
    assert record["status"] == "timeout" and record["exit_code"] == 124 and record["timeout"] == 2


def test_an_attached_job_past_its_output_cap_runs_on_and_its_log_says_what_was_dropped(screen: Screen) -> None:
    window = screen.start("-n", "--max-output", "100", "--", "for i in $(seq 100); do echo line-$i; done; exit 4")
    screen.wait_for(window, "line-100")  # the screen shows everything; only the log is capped
    screen.wait_for(window, r"--- Job done \[exit 4\]")
    screen.keys(window, "x")
    screen.wait_for(window, r"p-exit=4")
    (record,) = screen.p.jobs()
    shown = screen.p("logs", str(record["id"])).stdout
    assert shown.startswith("line-1\nline-2\n") and "line-100" not in shown
    assert shown.endswith("[p: output capped by --max-output: kept the first 100 bytes, dropped 792 more]\n")
