"""What a job carries besides its command (issue 9): env and secrets, end to
end on a real worker."""

from __future__ import annotations

import hashlib
import os
import secrets
import select
import subprocess
from pathlib import Path

from conftest import P_BIN, PClient
from helpers import eventually, job_dir, one_line_error

# Shell syntax in values must reach the job as text, never be evaluated.
TRICKY = "it's $(touch pwned) `id` \"q\" \\n $HOME ;|&"


def _record(p: PClient, job_id: str) -> dict[str, object]:
    (job,) = [job for job in p.jobs() if job["id"] == job_id]
    return job


def test_env_and_env_file_reach_the_job_and_the_record(p1: PClient) -> None:
    env_file = p1.workdir / "job.env"
    env_file.write_text(
        "# settings for the job\n"
        "\n"
        "PLAIN=one two   # a comment\n"
        "export EXPORTED=yes\n"
        "SINGLE='a \"b\" \\n # not a comment'\n"
        'DOUBLE="line1\\nline2 \\"q\\""\n'
        "EMPTY=\n"
        "OVERRIDDEN=from-file\n")
    result = p1("-n", "--env-file", str(env_file), "-e", "OVERRIDDEN=from-flag", "--env=TRICKY=" + TRICKY,
                 "-eSHORT=s", "--", 'printf "[%s]\\n" "$PLAIN" "$EXPORTED" "$SINGLE" "$DOUBLE" "$EMPTY" '
                 '"$OVERRIDDEN" "$TRICKY" "$SHORT"; ls')
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("[one two]\n[yes]\n[a \"b\" \\n # not a comment]\n[line1\nline2 \"q\"]\n[]\n"
                             f"[from-flag]\n[{TRICKY}]\n[s]\n")  # and `ls` found no `pwned`
    (job,) = p1.jobs()
    assert job["env"] == {"PLAIN": "one two", "EXPORTED": "yes", "SINGLE": 'a "b" \\n # not a comment',
                          "DOUBLE": 'line1\nline2 "q"', "EMPTY": "", "OVERRIDDEN": "from-flag",
                          "TRICKY": TRICKY, "SHORT": "s"}
    assert job["secrets"] == []


def test_a_malformed_env_file_or_variable_is_one_line(p1: PClient) -> None:
    env_file = p1.workdir / "bad.env"
    env_file.write_text("# fine\nGOOD=1\nthis line has no equals sign\n")
    result = p1("-n", "--env-file", str(env_file), "--", "true")
    message = one_line_error(result)
    assert result.returncode == 2
    assert str(env_file) in message and "line 3" in message
    env_file.write_text("A='unclosed\n")
    message = one_line_error(p1("-n", "--env-file", str(env_file), "--", "true"))
    assert "line 1" in message
    for bad in (["-e", "1X=y"], ["-e", "NOEQUALS"], ["--env-file", str(p1.workdir / "missing.env")],
                ["--secret", "NOT-A-NAME"], ["-e"]):
        result = p1("-n", *bad, "--", "true")
        one_line_error(result)
        assert result.returncode == 2, bad
    assert p1.jobs() == []


def _files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as src:
                    if needle in src.read():
                        found.append(path)
            except OSError:
                pass  # sockets, fifos, files gone meanwhile
    return found


def test_a_secret_reaches_the_job_and_nothing_else(p1: PClient) -> None:
    value = "s3cr3t-" + secrets.token_hex(12)
    digest = hashlib.sha256(value.encode()).hexdigest()
    # The job proves it sees the secret without printing it (output.log is a
    # file p keeps), then sleeps while `ps` is looked at.
    script = 'printf %s "$TOKEN" | sha256sum | cut -c1-64; sleep 4; echo end'
    client = subprocess.Popen([P_BIN, "-n", "--secret", "TOKEN", "--", script], cwd=p1.workdir,
                              env={**p1.env, "TOKEN": value}, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        home = p1.worker_home("w1")
        assert client.stdout is not None
        first = client.stdout.readline()  # the job runs, and sleeps now
        assert first == f"{digest}\n"
        (job_id,) = [job["id"] for job in p1.jobs()]
        # Client and worker run on this machine: one `ps` sees both sides.
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert "sleep 4" in processes
        assert value not in processes
        # Read by the job as it started, and deleted then.
        assert not (job_dir(home, job_id) / "secrets").exists()
        stdout, stderr = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, stderr
    assert stdout == "end\n"
    assert value not in stderr
    assert not (job_dir(home, job_id) / "secrets").exists()
    assert _files_holding(p1.home, value.encode()) == []  # config, data, cache, the client's own dirs
    assert _files_holding(p1.runtime, value.encode()) == []  # the ssh master's log, sockets
    assert _files_holding(home / ".p", value.encode()) == []  # job files, the agent's log
    job = _record(p1, job_id)
    assert job["secrets"] == ["TOKEN"]
    assert job["env"] == {}


def test_a_stopped_jobs_secret_is_gone_with_it(p1: PClient) -> None:
    value = "s3cr3t-" + secrets.token_hex(12)
    job_id = subprocess.run([P_BIN, "-n", "-d", "--secret", "TOKEN", "-e", "PLAIN=p", "--", "sleep 60"],
                            cwd=p1.workdir, env={**p1.env, "TOKEN": value}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, check=True).stdout.strip()
    home = p1.worker_home("w1")
    directory = job_dir(home, job_id)
    env_file = directory / "env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert env_file.read_text() == "export PLAIN=p\n"
    eventually(lambda: (directory / "pgid").exists())
    p1("stop", job_id, check=True)
    assert not (directory / "secrets").exists()
    assert _files_holding(home / ".p", value.encode()) == []
    assert _record(p1, job_id)["secrets"] == ["TOKEN"]


def test_an_unset_secret_off_a_terminal_is_one_line(p1: PClient) -> None:
    env = {name: text for name, text in p1.env.items() if name != "P_TEST_UNSET"}
    result = subprocess.run([P_BIN, "-n", "--secret", "P_TEST_UNSET", "--", "true"], cwd=p1.workdir, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    message = one_line_error(result)
    assert result.returncode == 2
    assert "P_TEST_UNSET" in message
    assert p1.jobs() == []


def test_on_a_terminal_an_unset_secret_is_asked_for(p1: PClient) -> None:
    # `script` gives p a terminal (so the job gets one too, and detaches);
    # getpass reads the value typed there.
    value = "typed-" + secrets.token_hex(8)
    digest = hashlib.sha256(value.encode()).hexdigest()
    command = (f"{P_BIN} -n -d --secret P_TEST_TYPED -e SEEN=yes -- "
               "'printf \"%s \" \"$SEEN\"; printf %s \"$P_TEST_TYPED\" | sha256sum | cut -c1-64'")
    session = subprocess.Popen(["script", "-qec", command, "/dev/null"], cwd=p1.workdir, env=p1.env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert session.stdin is not None and session.stdout is not None
    try:
        # Typed once the prompt shows: getpass discards what came before.
        shown = b""
        while b"not echoed" not in shown:
            assert select.select([session.stdout], [], [], 30)[0], shown
            chunk = os.read(session.stdout.fileno(), 4096)
            assert chunk, shown
            shown += chunk
        assert b"P_TEST_TYPED" in shown  # the prompt names the secret
        session.stdin.write(value.encode() + b"\n")
        session.stdin.flush()
        assert session.wait(timeout=60) == 0, shown + session.stdout.read()
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        session.stdin.close()
        session.stdout.close()
    (job,) = p1.jobs()
    assert p1("wait", job["id"]).returncode == 0
    assert p1("logs", job["id"], check=True).stdout.strip() == f"yes {digest}"
    assert _record(p1, job["id"])["secrets"] == ["P_TEST_TYPED"]
    assert _files_holding(p1.home, value.encode()) == []
    assert _files_holding(p1.worker_home("w1") / ".p", value.encode()) == []


def test_a_spec_the_worker_cannot_honour_is_refused_in_one_line(p1: PClient) -> None:
    for flags, named in ((["--nodes", "2"], "--nodes"), (["--cpus", "4"], "--cpus"),
                         (["--sbatch-arg", "--qos=low"], "--sbatch-arg")):
        result = p1("-n", *flags, "--", "true")
        assert result.returncode != 0
        assert named in one_line_error(result) and "Slurm" in one_line_error(result)
    for flags, named in ((["--timeout", "soon"], "--timeout"), (["--max-output", "lots"], "--max-output"),
                         (["-g", "two"], "-g"), (["--mem", "0"], "--mem")):
        result = p1("-n", *flags, "--", "true")
        assert result.returncode == 2 and named in one_line_error(result)
    assert p1.jobs() == []  # refused: nothing recorded
