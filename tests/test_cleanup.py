"""What jobs leave on a worker: sessions, processes, synced copies."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import PClient
from helpers import eventually, job_dir, one_line_error, workdir, worker_processes, worker_sessions

from p.sync import _looks_secret


def spares_holding(p: PClient, worker: str, name: str) -> list[Path]:
    """Spare copies (finished or in flight) that hold a file ``name``."""
    return list((p.worker_home(worker) / ".p" / "spares").glob(f"*/{name}"))


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


def test_rm_of_the_last_job_from_a_directory_removes_its_synced_copy(p1: PClient) -> None:
    marker = f"marker-{p1.home.name}.txt"
    (p1.workdir / marker).write_text("synced\n")
    first = p1("-d", "--", "true", check=True).stdout.strip()
    p1("wait", first, check=True)
    eventually(lambda: spares_holding(p1, "w1", marker))
    second = p1("-d", "--", "true", check=True).stdout.strip()
    p1("wait", second, check=True)
    eventually(lambda: spares_holding(p1, "w1", marker))
    # Another job from the directory remains: the copy serves its next sync.
    assert p1("rm", first).returncode == 0
    assert spares_holding(p1, "w1", marker)
    assert p1("rm", second).returncode == 0
    eventually(lambda: not spares_holding(p1, "w1", marker))
    assert not workdir(p1.worker_home("w1"), second).exists()
    # Asked to keep it, it stays.
    third = p1("-d", "--", "true", check=True).stdout.strip()
    p1("wait", third, check=True)
    eventually(lambda: spares_holding(p1, "w1", marker))
    assert p1("rm", "--keep-cache", third).returncode == 0
    assert spares_holding(p1, "w1", marker)


def test_worker_clean_removes_everything_but_running_jobs(p: PClient) -> None:
    p.register("w2", check=True)
    (p.workdir / "data.txt").write_text("synced\n")
    finished = p("-d", "--", "echo done", check=True).stdout.strip()
    p("wait", finished, check=True)
    running = p("-d", "--", "sleep 300", check=True).stdout.strip()
    home = p.worker_home("w2")
    eventually(lambda: spares_holding(p, "w2", "data.txt"))
    result = p("worker", "clean", "w2")
    assert result.returncode == 0, result.stderr
    assert "cleaned worker w2" in result.stderr
    eventually(lambda: not list((home / ".p" / "spares").iterdir()))
    # Whatever else is left there belongs to a running job.
    for directory in (home / ".p" / "jobs", home / ".p" / "workdirs"):
        for left in directory.iterdir():
            assert not (job_dir(home, left.name) / "exitcode").exists(), left
    assert not job_dir(home, finished).exists() and not workdir(home, finished).exists()
    assert job_dir(home, running).exists() and (workdir(home, running) / "data.txt").exists()
    assert [job["id"] for job in p.jobs()] == [running]  # the removed job's record went too
    p("stop", "--grace", "0", running, check=True)


def test_rm_all_removes_every_finished_job(p1: PClient) -> None:
    done = [p1("-d", "-n", "--", f"exit {code}", check=True).stdout.strip() for code in (0, 3)]
    for job in done:
        p1("wait", job)
    running = p1("-d", "-n", "--", "sleep 300", check=True).stdout.strip()
    result = p1("rm", "--all")
    assert result.returncode == 0, result.stderr
    assert "removed 2 finished job(s)" in result.stderr
    assert [job["id"] for job in p1.jobs()] == [running]
    for job in done:
        assert not job_dir(p1.worker_home("w1"), job).exists()
    assert "not both" in one_line_error(p1("rm", "--all", running))
    p1("stop", "--grace", "0", running, check=True)


def test_syncing_what_looks_secret_needs_a_yes(p1: PClient) -> None:
    project = p1.workdir
    (project / ".ssh").mkdir()
    (project / ".ssh" / "id_ed25519").write_text("private key\n")
    (project / ".env").write_text("TOKEN=x\n")
    (project / "certs").mkdir()
    (project / "certs" / "server.pem").write_text("key\n")
    (project / "id_map.py").write_text("# not a key\n")
    (project / ".gitignore").write_text("certs/\n")
    # Off a terminal nobody can be asked: refused, naming the files.
    message = one_line_error(p1("--", "true"))
    assert ".env" in message and ".ssh/id_ed25519" in message and "--yes" in message
    assert "server.pem" not in message and "id_map.py" not in message
    assert p1.jobs() == []
    result = p1("--yes", "--", "cat .env")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "TOKEN=x\n"
    # Excluded by .gitignore, they are not synced, so nothing is asked.
    (project / ".gitignore").write_text("certs/\n.env\n.ssh/\n")
    result = p1("--", "ls -A")
    assert result.returncode == 0, result.stderr
    assert ".env" not in result.stdout.split() and "id_map.py" in result.stdout.split()


def test_a_branch_named_like_a_key_is_not_a_secret_but_keys_and_env_files_are(p1: PClient) -> None:
    project = p1.workdir
    (project / "README").write_text("hi\n")
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "README"], ["commit", "-q", "-m", "one"], ["branch", "id_cleanup"],
                 ["checkout", "-q", "id_cleanup"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    assert (project / ".git" / "refs" / "heads" / "id_cleanup").exists()
    assert (project / ".git" / "logs" / "refs" / "heads" / "id_cleanup").exists()
    # Committed by convention: examples of a .env, not one.
    for name in (".env.example", ".env.sample", ".env.template"):
        (project / name).write_text("TOKEN=\n")
    result = p1("--", "git rev-parse --abbrev-ref HEAD")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "id_cleanup\n"  # .git/ itself is still synced
    (project / "tls").mkdir()
    (project / "tls" / "server.key").write_text("key\n")
    (project / ".env.local").write_text("TOKEN=x\n")
    message = one_line_error(p1("--", "true"))
    assert "tls/server.key" in message and ".env.local" in message
    assert "id_cleanup" not in message and ".env.example" not in message


@pytest.mark.parametrize(("name", "secret"), [
    ("id_rsa", True), ("deploy/id_ed25519", True), ("id_rsa.pub", False), ("id_map.py", False),
    (".git/refs/heads/id_cleanup", False), ("vendor/lib/.git/logs/refs/heads/id_x", False),
    (".git/.env", False), ("a.git/id_rsa", True),
    ("server.key", True), ("keys/server.key", True), ("monkey", False),
    (".env", True), (".env.local", True), ("app/.env.production", True),
    (".env.example", False), (".env.sample", False), (".env.template", False), (".env.local.example", False),
    (".envrc", False), (".ssh/config", True), ("certs/ca.pem", True),
])
def test_which_names_look_secret(name: str, secret: bool) -> None:
    assert _looks_secret(name) is secret
