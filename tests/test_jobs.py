"""The job lifecycle on a real worker: run, stream, ls, logs, wait, stop, pull, rm."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import P_BIN, PClient
from helpers import eventually, job_dir, master_pids, one_line_error, workdir


def test_output_streams_and_exit_status_propagates(p1: PClient) -> None:
    result = p1("--", "echo", "out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "out\nerr\n"  # one pty: stdout and stderr combined, CRLF undone
    assert "Traceback" not in result.stderr


def test_words_reach_the_login_shell_like_ssh(p1: PClient) -> None:
    # Joined with spaces and run by the worker's shell: shell syntax works,
    # quoting inside one word is kept, unicode and newlines arrive intact.
    result = p1("-n", "--", 'echo "a  b" && printf "%s\\n" "ünïcødé ✓"', "&&", "echo $((6*7))")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a  b\nünïcødé ✓\n42\n"
    lines = p1("-n", "--", "echo one\necho two").stdout
    assert lines == "one\ntwo\n"


def test_sync_honours_gitignore_and_keeps_git(p1: PClient) -> None:
    project = p1.workdir
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / ".gitignore").write_text("*.o\n/build/\n")
    (project / "src").mkdir()
    (project / "src" / "main.c").write_text("int main(){}\n")
    (project / "src" / "main.o").write_text("binary")
    (project / "build").mkdir()
    (project / "build" / "big").write_text("x")
    (project / "src" / ".gitignore").write_text("local.txt\n")
    (project / "src" / "local.txt").write_text("nested ignore")
    (project / "name with spaces.txt").write_text("kept")
    result = p1("--", "find . -type f -not -path './.git/objects/*' | sort")
    assert result.returncode == 0, result.stderr
    files = result.stdout.split("\n")
    assert "./src/main.c" in files
    assert "./name with spaces.txt" in files
    assert "./.git/HEAD" in files
    assert "./src/main.o" not in files
    assert "./build/big" not in files
    assert "./src/local.txt" not in files


def test_each_job_has_its_own_workdir_even_when_files_are_reused(p1: PClient) -> None:
    (p1.workdir / "data.txt").write_text("original\n")
    first = p1("-d", "--", "true", check=True).stdout.strip()
    p1("wait", first, check=True)
    second = p1("--", "echo changed >> data.txt; cat data.txt")
    assert second.stdout == "original\nchanged\n"
    home = p1.worker_home("w1")
    assert (workdir(home, first) / "data.txt").read_text() == "original\n"
    jobs = {job["id"]: job for job in p1.jobs()}
    (second_id,) = [job_id for job_id in jobs if job_id != first]
    assert (workdir(home, second_id) / "data.txt").read_text() == "original\nchanged\n"


def test_no_sync_runs_in_an_empty_workdir(p1: PClient) -> None:
    (p1.workdir / "local.txt").write_text("here")
    result = p1("-n", "--", "ls -A | wc -l")
    assert result.stdout.strip() == "0"


def test_the_agents_tmux_server_stays_up_between_jobs(p1: PClient) -> None:
    """A job's start costs no tmux server start: the one the first job
    started serves the next, after the first has ended."""
    def servers() -> list[str]:
        out = subprocess.run(["ps", "-u", p1.sshd.workers["w1"].user, "-o", "pid=,args="], capture_output=True,
                             text=True).stdout
        return [line for line in out.splitlines() if line.split()[1:2] == ["tmux"] and "tmux.sock" in line]

    p1("-n", "--", "true", check=True)
    first = servers()
    p1("-n", "--", "true", check=True)
    assert len(first) == 1 and servers() == first, (first, servers())


def test_detach_wait_logs_and_ls(p1: PClient) -> None:
    job = p1("-d", "--", "echo begin; sleep 1; echo end; exit 4", check=True).stdout.strip()
    assert len(job) == 32
    listing = p1("ls", check=True).stdout.splitlines()
    assert listing[0].split() == ["ID", "WORKER", "CWD", "COMMAND", "STATUS", "DURATION"]
    assert job[:8] in listing[2] and "running" in listing[2]
    waited = p1("wait", job[:6])
    assert waited.returncode == 4
    assert "exit 4" in waited.stderr
    assert p1("logs", job[:6]).stdout == "begin\nend\n"
    (record,) = p1.jobs()
    assert record["status"] == "done" and record["exit_code"] == 4
    assert record["command"] == "echo begin; sleep 1; echo end; exit 4"
    assert record["cwd"] == "~/project"
    assert 1 <= record["duration"] < 10
    row = p1("ls", check=True).stdout.splitlines()[2].split()
    assert row[0] == job[:8] and row[1] == "w1" and row[-3:-1] == ["done", "[4]"]
    # The worker-side layout of the spec.
    files = {path.name for path in job_dir(p1.worker_home("w1"), job).iterdir()}
    assert {"cmd", "cwd", "worker", "started_at", "output.log", "exitcode", "tmux_session"} <= files
    assert (job_dir(p1.worker_home("w1"), job) / "tmux_session").read_text() == f"p-{job[:8]}"
    # The local record is a JSON file named by the uuid.
    local = json.loads((p1.home / ".local/share/p/jobs" / f"{job}.json").read_text())
    assert local["exit_code"] == 4


def test_logs_follow_ends_with_the_job(p1: PClient) -> None:
    job = p1("-d", "-n", "--", "for i in 1 2 3; do echo tick $i; sleep 0.5; done", check=True).stdout.strip()
    followed = p1("logs", "-f", job, timeout=30)
    assert followed.returncode == 0
    assert followed.stdout == "tick 1\ntick 2\ntick 3\n"


def test_stop_kills_the_whole_process_group(p1: PClient) -> None:
    user = p1.sshd.workers["w1"].user
    job = p1("-d", "-n", "--", "sleep 301 & sleep 302; wait", check=True).stdout.strip()
    eventually(lambda: subprocess.run(["pgrep", "-u", user, "-f", "sleep 302"],
                                      capture_output=True).returncode == 0)
    result = p1("stop", job[:8])
    assert result.returncode == 0, result.stderr
    assert "stopped job" in result.stderr
    for pattern in ("sleep 301", "sleep 302"):
        assert subprocess.run(["pgrep", "-u", user, "-f", pattern], capture_output=True).returncode == 1
    (record,) = p1.jobs()
    assert record["status"] == "stopped"
    assert "stopped" in p1("ls", check=True).stdout
    assert "was not running" in p1("stop", job).stderr


def test_stop_escalates_to_sigkill_after_the_grace_period(p1: PClient) -> None:
    job = p1("-d", "-n", "--", "trap '' TERM; echo ready; sleep 300", check=True).stdout.strip()
    eventually(lambda: "ready" in p1("logs", job).stdout)
    result = p1("stop", "--grace", "1", job)
    assert result.returncode == 0
    (record,) = p1.jobs()
    assert record["status"] == "stopped" and record["exit_code"] == 137


def test_pull_files_and_directories_confined_to_the_workdir(p1: PClient, tmp_path: Path) -> None:
    job = p1("-d", "-n", "--", "mkdir -p out/sub && echo artifact > out/sub/a.bin && echo top > top.txt"
             " && ln -s /etc/passwd leak && ln -s /etc escape", check=True).stdout.strip()
    p1("wait", job, check=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert p1("pull", job, "top.txt", str(dest)).returncode == 0
    assert (dest / "top.txt").read_text() == "top\n"
    assert p1("pull", job, "out", str(dest)).returncode == 0
    assert (dest / "out" / "sub" / "a.bin").read_text() == "artifact\n"
    for bad in ("../../../etc/passwd", "/etc/passwd", "escape/passwd", "leak"):
        message = one_line_error(p1("pull", job, bad, str(dest)))
        assert "outside the job's workdir" in message, message
    assert "does not exist" in one_line_error(p1("pull", job, "missing.txt", str(dest)))
    assert not (dest / "passwd").exists()


def test_rm_refuses_running_jobs_and_removes_remote_dirs(p1: PClient) -> None:
    home = p1.worker_home("w1")
    running = p1("-d", "--", "sleep 300", check=True).stdout.strip()
    assert "is running" in one_line_error(p1("rm", running))
    assert job_dir(home, running).exists()
    assert p1("rm", "--force", running).returncode == 0
    assert not job_dir(home, running).exists() and not workdir(home, running).exists()
    done = p1("-d", "--", "true", check=True).stdout.strip()
    p1("wait", done, check=True)
    assert p1("rm", done[:5]).returncode == 0
    assert not job_dir(home, done).exists() and not workdir(home, done).exists()
    assert p1.jobs() == []
    assert not (p1.home / ".local/share/p/jobs" / f"{done}.json").exists()


def test_bad_job_ids_are_one_line(p1: PClient) -> None:
    assert "no job matches" in one_line_error(p1("logs", "abcdef"))
    assert "not a job id" in one_line_error(p1("attach", "../../etc"))
    assert "not a job id" in one_line_error(p1("stop", "$(reboot)"))
    for empty in ([], [""], ["  ", "\t"]):
        result = p1("--", *empty)
        assert "nothing to run" in one_line_error(result) and result.returncode == 2
    assert not p1.jobs()


def test_ls_marks_unwatched_jobs_unknown_then_reconciles(p1: PClient) -> None:
    job = p1("-d", "-n", "--", "sleep 2", check=True).stdout.strip()
    p1.close_masters()  # as if the client had been offline: no live link
    first = p1("ls")
    assert "unknown" in first.stdout.splitlines()[2]
    assert "next `p ls`" in first.stderr
    eventually(lambda: (job_dir(p1.worker_home("w1"), job) / "exitcode").exists())
    second = p1("ls", check=True).stdout.splitlines()[2]
    assert "done [0]" in second


@pytest.mark.parametrize("agent_runs", [False, True])
def test_agent_replaced_when_its_build_differs(p1: PClient, agent_runs: bool) -> None:
    home = p1.worker_home("w1")
    (agent,) = [path for path in (home / ".p/bin").glob("p-agent-*") if not path.name.endswith(".sha256")]
    agent.write_bytes(b"#!/bin/sh\necho broken\n")  # damaged or another build
    p1.close_masters()
    if not agent_runs:  # else the old build still serves from memory (or its unpacked copy)
        pid = int((home / ".p/run" / f"{agent.name.split('.pyz')[0].replace('p-agent-', 'agent-')}.pid")
                  .read_text())
        os.kill(pid, 15)
    result = p1("-n", "--", "echo", "works")
    assert result.stdout == "works\n", result.stderr
    assert agent.read_bytes() != b"#!/bin/sh\necho broken\n"


def test_ctrl_c_while_streaming_reaches_the_job(p1: PClient) -> None:
    import signal

    process = subprocess.Popen(
        [P_BIN, "-n", "--", "trap 'echo got-int; exit 9' INT; echo ready; sleep 60 & wait"],
        env=p1.env, cwd=p1.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert out == "got-int\n"
    assert process.returncode == 9


def test_resync_reuses_the_spare_copy_and_makes_it_exact(p1: PClient) -> None:
    project = p1.workdir
    (project / ".gitignore").write_text("out/\n")
    (project / "a.txt").write_text("original\n")
    (project / "b.txt").write_text("deleted later\n")
    (project / "same.txt").write_text("unchanged\n")
    first = p1("-d", "--", "mkdir -p out; echo artifact > out/x; echo job1 >> a.txt; sleep 1", check=True)
    first_id = first.stdout.strip()
    spares = p1.worker_home("w1") / ".p" / "spares"
    # Other tests' directories have spares on w1 too: this one has same.txt.
    spare_file = eventually(lambda: [f for f in spares.glob("*/same.txt") if ".tmp-" not in str(f)])
    spare_inode = spare_file[0].stat().st_ino  # type: ignore[index]
    p1("wait", first_id, check=True)
    (project / "b.txt").unlink()
    (project / "c.txt").write_text("new\n")
    second = p1("--", "ls -A1; cat a.txt")
    assert second.stdout == ".gitignore\na.txt\nc.txt\nsame.txt\noriginal\n"
    second_id = [job["id"] for job in p1.jobs() if job["id"] != first_id][0]
    # The spare became the second job's workdir (renamed, not copied again)...
    assert (workdir(p1.worker_home("w1"), str(second_id)) / "same.txt").stat().st_ino == spare_inode
    # ...and the first job's files are its own.
    first_dir = workdir(p1.worker_home("w1"), first_id)
    assert (first_dir / "a.txt").read_text() == "original\njob1\n"
    assert (first_dir / "out" / "x").exists()


def master_sockets(p: PClient) -> list[Path]:
    """The sockets the client's SSH masters listen on (``cm-<key>`` is a
    symlink to the current one)."""
    return [path for path in (p.runtime / "p").glob("cm-*") if not path.is_symlink()]


def test_a_killed_agent_behind_a_live_master_is_restarted(p1: PClient) -> None:
    home = p1.worker_home("w1")
    assert p1("-n", "--", "echo", "before").stdout == "before\n"
    (pidfile,) = (home / ".p/run").glob("agent-*.pid")
    os.kill(int(pidfile.read_text()), 9)
    assert p1("-n", "--", "echo", "after").stdout == "after\n"


def test_a_killed_master_leaves_nothing_that_breaks_the_next_command(p1: PClient) -> None:
    assert p1("-n", "--", "true").returncode == 0
    (killed,) = master_sockets(p1)
    (pid,) = master_pids(p1)
    os.kill(pid, 9)  # its socket file stays behind
    result = p1("-n", "--", "echo", "again")
    assert result.stdout == "again\n", result.stderr
    assert len(master_pids(p1)) == 1  # one new master, not a stray ssh per command
    assert not killed.exists()
    assert p1("-n", "--", "true").returncode == 0
    assert len(master_pids(p1)) == 1


def test_attach_off_a_terminal_is_one_line(p1: PClient) -> None:
    job = p1("-d", "-n", "--", "sleep 30", check=True).stdout.strip()
    assert "needs a terminal" in one_line_error(p1("attach", job))
    p1("stop", "--grace", "0", job, check=True)


def test_xdg_directories_are_honoured(p: PClient, tmp_path: Path) -> None:
    config, data = tmp_path / "elsewhere-config", tmp_path / "elsewhere-data"
    p.env.update(XDG_CONFIG_HOME=str(config), XDG_DATA_HOME=str(data))
    p.register("w1", check=True)
    job = p("-d", "-n", "--", "true", check=True).stdout.strip()
    assert (config / "p" / "config.yaml").is_file()
    assert (data / "p" / "jobs" / f"{job}.json").is_file()
    assert not (p.home / ".config" / "p").exists() and not (p.home / ".local" / "share" / "p").exists()


def test_jobs_see_the_users_environment_not_the_agents(p1: PClient) -> None:
    # A frozen agent unpacks under ~/.p/tmp with TMPDIR and LD_LIBRARY_PATH of
    # its own: jobs must not inherit them.
    env = p1("-n", "--", "env", check=True).stdout
    names = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line}
    assert not {name for name in names if name.startswith(("_PYI", "STATICX", "_MEI", "P_USER"))}
    assert ".p/tmp" not in env
    assert "LD_LIBRARY_PATH" not in names


def test_losing_the_link_while_streaming_reconnects_and_resumes(p1: PClient) -> None:
    process = subprocess.Popen([P_BIN, "-n", "--", "echo ready; sleep 4; echo after; exit 6"], env=p1.env,
                               cwd=p1.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    for control in master_sockets(p1):
        for pid in master_pids(p1, control):
            os.kill(pid, 9)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out) == (6, "after\n"), err
    assert err.count("the link to w1 broke while streaming") == 1 and err.count("is back") == 1, err
    assert "Traceback" not in err


def test_help_is_a_verb(p1: PClient) -> None:
    top = p1("help")
    assert top.returncode == 0, top.stderr
    assert "Usage: p" in top.stdout and "attach" in top.stdout and "worker" in top.stdout
    rm = p1("help", "rm")
    assert rm.returncode == 0 and "--keep-cache" in rm.stdout
    clean = p1("help", "worker", "clean")
    assert clean.returncode == 0 and "Usage: p worker clean" in clean.stdout
    assert "no such command" in one_line_error(p1("help", "nosuch"))


def test_a_worker_problem_in_ls_names_the_worker_once(p1: PClient) -> None:
    p1("-d", "-n", "--", "sleep 2", check=True)
    # The worker loses tmux (here: the same user, reached as an account whose
    # PATH lacks it).
    config_path = p1.home / ".config/p/config.yaml"
    config_path.write_text(config_path.read_text().replace("connection: w1", "connection: notmux"))
    p1.close_masters()
    result = p1("ls", "-r")
    lines = [line for line in result.stderr.splitlines() if line.startswith("p: ")]
    assert lines and lines[0].startswith("p: worker w1 lacks tmux"), result.stderr


def test_a_job_started_off_a_terminal_gets_none_like_ssh(p1: PClient) -> None:
    # A pager or a prompt must not wait for a terminal nobody has.
    paged = p1("-n", "--", "seq 1 200 | less; echo after", timeout=60)
    assert paged.returncode == 0, paged.stderr
    assert paged.stdout.endswith("199\n200\nafter\n")
    probe = ('read answer; echo "read [$answer]"; [ -t 0 ] || echo stdin-no-tty; [ -t 1 ] || echo stdout-no-tty; '
             'printenv TERM || echo no-TERM; (: > /dev/tty) 2>/dev/null || echo no-controlling-terminal')
    result = p1("-n", "--", probe, timeout=60)
    assert result.stdout.split("\n") == ["read []", "stdin-no-tty", "stdout-no-tty", "no-TERM",
                                         "no-controlling-terminal", ""]
    # git pages and colours only for a terminal.
    subprocess.run(["git", "init", "-q", str(p1.workdir)], check=True)
    (p1.workdir / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(p1.workdir), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(p1.workdir), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    "commit", "-q", "-m", "first commit"], check=True)
    log = p1("--", "git -c color.ui=auto log", timeout=60)
    assert log.returncode == 0, log.stderr
    assert "first commit" in log.stdout and "\x1b" not in log.stdout


def test_an_off_terminal_job_that_outlives_its_tmux_server_can_be_stopped(p1: PClient) -> None:
    """A job started off a terminal has none to hear a hangup through: when
    the agent's tmux server goes away, it runs on, so p must still show it
    running and `p stop` must still end it."""
    job_id = p1("-d", "-n", "--", "sleep 300; echo never", check=True).stdout.strip()
    home = p1.worker_home("w1")
    pgid_file = job_dir(home, job_id) / "pgid"
    # The job's shell creates the file, then writes its pid into it.
    pgid = int(str(eventually(lambda: pgid_file.exists() and pgid_file.read_text().strip())))
    spec = p1.sshd.workers["w1"]
    subprocess.run(["runuser", "-u", spec.user, "--", "tmux", "-S", str(home / ".p" / "run" / "tmux.sock"),
                    "kill-server"], check=True)
    (record,) = json.loads(p1("ls", "--json", "--refresh").stdout)
    assert record["status"] == "running"
    assert p1("stop", "--grace", "1", job_id).returncode == 0

    def group_gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    eventually(group_gone, timeout=20)
    (record,) = p1.jobs()
    assert record["status"] == "stopped"
