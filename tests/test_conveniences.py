"""Conveniences of issue 14, end to end on real workers: `.pignore`,
`--exclude` and the sync preview, port forwarding, shell completion,
Ctrl+C-detach mode, notifications, and the guide for coding agents."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
from pathlib import Path

from conftest import P_BIN, PClient
from helpers import Screen, eventually, one_line_error, workdir
from sshd_worker import free_ports


def _synced_files(p: PClient, *args: str) -> tuple[str, list[str]]:
    """Run a job that lists its workdir; its id and the files there."""
    result = p(*args, "--", "find . -type f -not -path './.git/*' | sort")
    assert result.returncode == 0, result.stderr
    job = p.jobs()[0]
    return str(job["id"]), [line.removeprefix("./") for line in result.stdout.split()]


def test_pignore_and_exclude_keep_files_out_and_the_preview_lists_the_rest(p1: PClient) -> None:
    # Not `data/`: tests/test_spares.py looks for a file by that name in
    # every spare on the (shared) worker.
    project = p1.workdir
    (project / "inputs").mkdir()
    (project / "inputs" / "huge.bin").write_bytes(b"\0" * 300_000)
    (project / "inputs" / "small.csv").write_text("a,b\n")
    (project / "inputs" / "keep.csv").write_text("k\n")
    (project / "build").mkdir()
    (project / "build" / "tool").write_text("#!/bin/sh\n")
    (project / "src").mkdir()
    (project / "src" / "main.c").write_text("int main(){return 0;}\n" * 40)  # 920 B: the largest sent
    (project / "notes.log").write_text("log\n")
    (project / ".gitignore").write_text("build/\n")
    # gitignore syntax: the later line wins, `!` re-includes, even what
    # .gitignore leaves out (build/); `# ` is a comment.
    (project / ".pignore").write_text("# big data stays here\ninputs/*\n!inputs/keep.csv\n!build/\n")

    # The preview: largest first, with sizes, nothing sent, no worker asked.
    preview = p1("sync", "--dry-run", check=True).stdout.splitlines()
    listed = [line.split()[-1] for line in preview[:-1]]
    assert listed[0] == "src/main.c" and set(listed) == {
        "src/main.c", ".pignore", ".gitignore", "inputs/keep.csv", "build/tool", "notes.log"}
    sizes = [int(line.split()[0]) for line in preview[:-1]]
    assert sizes == sorted(sizes, reverse=True)
    assert preview[-1].startswith("6 files,") and "nothing was sent" in preview[-1]
    assert p1("sync", "--dry-run", "--exclude", "*.log", check=True).stdout.count("\n") == 6
    run_preview = p1("--dry-run-sync", "--exclude", "src/", "--", "true", check=True)
    assert "src/main.c" not in run_preview.stdout and "inputs/keep.csv" in run_preview.stdout
    assert p1.jobs() == []  # a preview runs nothing

    job, files = _synced_files(p1, "--exclude", "*.log", "--exclude=src/")
    assert sorted(files) == [".gitignore", ".pignore", "build/tool", "inputs/keep.csv"]
    record = json.loads(p1("show", job, "--json", check=True).stdout)
    assert record["excludes"] == ["*.log", "src/"]
    # `p rerun` syncs with the same excludes.
    rerun = p1("rerun", job)
    assert rerun.returncode == 0, rerun.stderr
    (again,) = [j for j in p1.jobs() if j["rerun_of"] == job]
    assert not (workdir(p1.worker_home("w1"), str(again["id"])) / "notes.log").exists()
    assert (workdir(p1.worker_home("w1"), str(again["id"])) / "inputs" / "keep.csv").exists()

    # Without .pignore only .gitignore applies.
    (project / ".pignore").unlink()
    _, files = _synced_files(p1)
    assert "inputs/huge.bin" in files and "build/tool" not in files


def test_a_pignore_that_cannot_be_read_and_a_bare_p_sync_are_one_line(p1: PClient) -> None:
    (p1.workdir / ".pignore").write_bytes(b"\xff\xfe not text\n")
    result = p1("--", "true")
    assert result.returncode == 2 and ".pignore is not UTF-8 text" in one_line_error(result)
    assert p1.jobs() == []
    bare = p1("sync")
    assert bare.returncode == 2 and "--dry-run" in one_line_error(bare)


def _get(url: str) -> str | None:
    """The body at ``url`` through curl, as a user would fetch it; None if nothing answers."""
    result = subprocess.run(["curl", "-s", "--max-time", "5", url], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def test_a_forwarded_port_reaches_a_server_started_by_a_job(p1: PClient) -> None:
    (p1.workdir / "hello.txt").write_text("hello through the forward\n")
    remote, local, background, taken = free_ports(4)
    job = p1("-d", "--", f"exec python3 -m http.server {remote} --bind 127.0.0.1", check=True).stdout.strip()

    # Until Ctrl+C: the URL on stdout, then the server's files through it.
    holder = subprocess.Popen([P_BIN, "port", job[:6], f"{remote}:{local}"], env=p1.env, cwd=p1.workdir,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == f"http://localhost:{local}/"
    assert eventually(lambda: _get(f"http://localhost:{local}/hello.txt")) == "hello through the forward\n"
    holder.send_signal(signal.SIGINT)
    assert holder.wait(timeout=30) == 0
    assert _get(f"http://localhost:{local}/hello.txt") is None

    # In the background: listed, reachable, stopped.
    started = p1("port", job, f"{remote}:{background}", "--background", check=True)
    assert started.stdout.strip() == f"http://localhost:{background}/"
    listed = p1("port", "--list", check=True).stdout
    assert re.search(rf"^{background}\s+{remote}\s+{job[:8]}\s+w1\s", listed, re.MULTILINE)
    assert _get(f"http://localhost:{background}/hello.txt") == "hello through the forward\n"
    p1("port", "--stop", str(background), check=True)
    assert p1("port", "--list", check=True).stdout == ""
    assert _get(f"http://localhost:{background}/hello.txt") is None

    # A local port in use is one line naming it; nothing is forwarded.
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", taken))
        occupant.listen()
        refused = p1("port", job, f"{remote}:{taken}")
        assert str(taken) in one_line_error(refused) and "in use" in one_line_error(refused)
        assert "in use" in one_line_error(p1("-d", "-p", f"{remote}:{taken}", "--", "true"))
    assert p1("port", "--list", check=True).stdout == ""
    p1("stop", job, check=True)
    ended = p1("port", job, f"{remote}:{local}")
    assert "is not running" in one_line_error(ended)


def test_run_form_p_forwards_from_the_start_until_the_job_ends(p1: PClient) -> None:
    (p1.workdir / "index.html").write_text("<p>notebook</p>\n")
    remote, local = free_ports(2)
    started = p1("-d", "-p", f"{remote}:{local}", "--", f"exec python3 -m http.server {remote} --bind 127.0.0.1")
    assert started.returncode == 0, started.stderr
    job = started.stdout.strip()  # stdout keeps only the id, for scripts
    assert f"http://localhost:{local}/" in started.stderr
    assert eventually(lambda: _get(f"http://localhost:{local}/")) == "<p>notebook</p>\n"
    assert p1("port", "--list", check=True).stdout.count(job[:8]) == 1
    p1("stop", job, check=True)
    # The forward ends with the job, by itself.
    eventually(lambda: p1("port", "--list", check=True).stdout == "")
    assert _get(f"http://localhost:{local}/") is None


def _tab(p: PClient, script: Path, words: list[str]) -> list[str]:
    """What Tab offers after ``words`` (the last one being completed) in
    an interactive bash that sourced ``script``, typer's generated one."""
    array = " ".join(shlex.quote(word) for word in words)
    probe = (f"source {shlex.quote(str(script))}; COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; "
             f"_p_completion p; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    result = subprocess.run(["bash", "--norc", "-i", "-c", probe], env=p.env, cwd=p.workdir,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_completion_offers_job_ids_and_worker_names_from_local_files(p1: PClient) -> None:
    p1.register("w2", "-n", "second", check=True)
    first = p1("-n", "--", "echo one", check=True)
    assert first.returncode == 0
    second = p1("-d", "-n", "--", "sleep 30", check=True).stdout.strip()
    ids = [str(job["id"]) for job in p1.jobs()]  # newest first
    assert ids[0] == second
    # Typer's own script for bash, as `p --show-completion` prints it in bash.
    shown = subprocess.run(["bash", "-c", f"{shlex.quote(P_BIN)} --show-completion; exit $?"], env=p1.env,
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "complete -o default -F _p_completion p" in shown.stdout, shown.stderr
    script = p1.home / "p-completion.bash"
    script.write_text(shown.stdout)

    assert _tab(p1, script, ["p", "attach", ""]) == [job_id[:8] for job_id in ids]
    assert second[:8] in _tab(p1, script, ["p", "logs", second[:3]])
    assert _tab(p1, script, ["p", "show", "--json", second[:8]]) == [second[:8]]  # typer answers this one
    assert _tab(p1, script, ["p", "worker", "rm", ""]) == ["w1", "second"]
    offered = _tab(p1, script, ["p", "s"])
    assert "second" in offered and "show" in offered and "stop" in offered and "w1" not in offered
    assert _tab(p1, script, ["p", "-d", ""]) == ["w1", "second", "@all"]
    assert "--json" in _tab(p1, script, ["p", "show", "--"])
    # zsh and fish get the command as each id's description.
    zsh = subprocess.run([P_BIN], env={**p1.env, "_P_COMPLETE": "complete_zsh",
                                       "_TYPER_COMPLETE_ARGS": f"p stop {second[:8]}"},
                         capture_output=True, text=True, timeout=30)
    assert zsh.stdout.strip() == f"_arguments '*: :((\"{second[:8]}\":\"running\\\\: sleep 30\"))'"
    # `p pull`'s paths are this machine's: p offers nothing (asks no
    # worker), and the script's `-o default` makes bash list files here.
    assert _tab(p1, script, ["p", "pull", second[:8], "res"]) == []
    p1("stop", second, check=True)


def test_install_completion_writes_typers_script_for_the_shell(p1: PClient) -> None:
    result = subprocess.run([P_BIN, "--install-completion", "bash"], capture_output=True, text=True, timeout=30,
                            env={**p1.env, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert result.returncode == 0, result.stderr
    installed = p1.home / ".bash_completions" / "p.sh"
    assert "_p_completion" in installed.read_text()
    assert str(installed) in (p1.home / ".bashrc").read_text()


def test_in_ctrl_c_detach_mode_ctrl_c_detaches_and_the_job_runs_on(screen: Screen) -> None:
    p = screen.p
    window = screen.start("--ctrl-c-detaches", "--", "echo started; sleep 120")
    shown = screen.wait_for(window, r"\[running\].*Ctrl\+C detaches")
    assert "started" in shown
    screen.keys(window, "C-c")
    assert "detached from job" in screen.wait_for(window, r"p-exit=0")
    (record,) = p.jobs()
    assert record["status"] == "running"
    job = str(record["id"])

    # Off by default: Ctrl+C reaches the job, and the status bar says so.
    config = p.home / ".config" / "p" / "config.yaml"
    again = screen.start("attach", job)
    screen.wait_for(again, r"\[running\].*Ctrl\+C interrupts")
    screen.keys(again, "C-b", "d")
    screen.wait_for(again, r"p-exit=0")
    # On for every attach with `detach_on_ctrl_c: true` in the config.
    config.write_text(config.read_text() + "detach_on_ctrl_c: true\n")
    third = screen.start("attach", job)
    screen.wait_for(third, r"\[running\].*Ctrl\+C detaches")
    screen.keys(third, "C-c")
    screen.wait_for(third, r"p-exit=0")
    assert p.jobs()[0]["status"] == "running"
    config.write_text(config.read_text().replace("detach_on_ctrl_c: true\n", ""))
    last = screen.start("attach", job)
    screen.wait_for(last, r"\[running\].*Ctrl\+C interrupts")
    screen.keys(last, "C-c")
    screen.wait_for(last, r"--- Job done \[exit 130\]")
    screen.keys(last, "Enter")
    screen.wait_for(last, r"p-exit=130")


def _add_config(p: PClient, text: str) -> None:
    config = p.home / ".config" / "p" / "config.yaml"
    config.write_text(config.read_text() + text)


def test_notification_commands_run_with_the_job_id_and_exit_status_and_never_change_p_status(p1: PClient) -> None:
    told = p1.home / "told"
    worker_home = p1.worker_home("w1")
    _add_config(p1, "notify:\n"
                    f"  command: 'cat > {told}-$P_JOB_ID.json; echo \"$P_EXIT $P_STATUS\" > {told}-$P_JOB_ID'\n"
                    "  desktop: true\n"  # no notify-send here: silently nothing
                    "  worker_command: 'echo \"$P_JOB_ID $P_EXIT $P_WORKER\" >> ~/worker-told'\n")
    # Streamed: p sees the end, the client's command runs; the worker's too.
    streamed = p1("--", "echo hi; exit 3")
    assert streamed.returncode == 3 and streamed.stdout == "hi\n"
    job = str(p1.jobs()[0]["id"])
    assert eventually(lambda: Path(f"{told}-{job}").exists() and Path(f"{told}-{job}").read_text()) == "3 done\n"
    shown = json.loads(Path(f"{told}-{job}.json").read_text())
    assert shown["id"] == job and shown["exit_code"] == 3 and shown["status"] == "done"
    assert [event["event"] for event in shown["events"]][-1] == "ended"
    assert eventually(lambda: (worker_home / "worker-told").exists()
                      and (worker_home / "worker-told").read_text()) == f"{job} 3 w1\n"

    # Detached, with nobody watching: the worker's command runs by itself;
    # with --notify a watcher here sees the end and runs the client's.
    quiet = p1("-d", "--", "exit 5", check=True).stdout.strip()
    watched = p1("-d", "--notify", "--", "sleep 1; exit 6", check=True).stdout.strip()
    assert eventually(lambda: Path(f"{told}-{watched}").exists() and Path(f"{told}-{watched}").read_text()) \
        == "6 done\n"
    # The worker's command runs once the end is recorded, in the background:
    # it may come after the client's.
    assert eventually(lambda: {f"{quiet} 5 w1", f"{watched} 6 w1"}
                      <= set((worker_home / "worker-told").read_text().splitlines()))
    assert not Path(f"{told}-{quiet}").exists()  # no client saw it end (yet)
    assert p1("wait", quiet).returncode == 5  # now one has: told once
    assert eventually(lambda: Path(f"{told}-{quiet}").exists() and Path(f"{told}-{quiet}").read_text()) \
        == "5 done\n"


def test_a_failing_notification_is_logged_and_p_keeps_the_jobs_status(p1: PClient) -> None:
    _add_config(p1, "notify:\n  command: 'echo broken >&2; exit 9'\n  worker_command: 'exit 7'\n")
    result = p1("--", "exit 2")
    assert result.returncode == 2 and result.stderr == ""
    job = str(p1.jobs()[0]["id"])
    def both() -> object:
        lines = p1("events", job, "--json", check=True).stdout.splitlines()
        sources = {event["source"]: event for event in map(json.loads, lines) if event["event"] == "notify-failed"}
        return sources if len(sources) == 2 else None

    logged = eventually(both)
    assert logged["client"]["exit_code"] == 9 and logged["worker"]["exit_code"] == 7  # type: ignore[index]
    assert p1("wait", job).returncode == 2


def test_the_guide_for_agents_is_p_help_agents_and_every_command_in_it_runs(p1: PClient) -> None:
    guide = p1("help", "agents", check=True).stdout
    assert guide == (Path(__file__).resolve().parent.parent / "docs" / "agents.md").read_text()
    (block,) = re.findall(r"```sh\n(.*?)```", guide, re.DOTALL)
    commands = [line.split("  #")[0].strip() for line in block.splitlines()]
    assert commands and all(command.startswith(("p ", "id=$(p ")) for command in commands)
    # What the examples run, in this directory.
    (p1.workdir / "Makefile").write_text("test:\n\t@echo tests-pass\n")
    script = "".join(f'{command}\necho "status $?"\n' for command in commands)
    result = subprocess.run(["sh", "-c", script], env=p1.env, cwd=p1.workdir, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    statuses = re.findall(r"^status (\d+)$", result.stdout, re.MULTILINE)
    assert statuses == ["0"] * len(commands), result.stdout + result.stderr
    assert result.stdout.count("tests-pass") >= 2  # streamed by the first, shown by `p logs`
    jobs = p1.jobs()
    assert [job["status"] for job in jobs] == ["done", "done"] and jobs[0]["timeout"] == 1800
    assert "Traceback" not in result.stderr


def test_a_job_waiting_for_a_slot_gets_its_forward_and_serves_once_it_starts(p1: PClient) -> None:
    p1("worker", "set", "w1", "--slots", "1", check=True)
    try:
        (p1.workdir / "index.html").write_text("<p>after the wait</p>\n")
        first = p1("-d", "-n", "--", "sleep 60", check=True).stdout.strip()
        remote, local = free_ports(2)
        queued = p1("-d", "-p", f"{remote}:{local}", "--",
                    f"exec python3 -m http.server {remote} --bind 127.0.0.1")
        assert queued.returncode == 0, queued.stderr
        job = queued.stdout.strip()
        assert "queued on w1" in queued.stderr and f"http://localhost:{local}/" in queued.stderr
        assert job[:8] in p1("port", "--list", check=True).stdout
        p1("stop", first, check=True)  # its slot frees: the server starts
        assert eventually(lambda: _get(f"http://localhost:{local}/")) == "<p>after the wait</p>\n"
        p1("stop", job, check=True)
        eventually(lambda: p1("port", "--list", check=True).stdout == "")
    finally:
        # The worker is shared with later tests: no cap for them.
        p1("worker", "set", "w1", "--slots", "0", check=True)
