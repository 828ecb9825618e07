"""Issue 17, the client's side: damaged files, a vanished directory, cold
starts at once and a cut link, each against a real worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from conftest import P_BIN, PClient
from helpers import master_pids, one_line_error


def jobs_dir(p: PClient) -> Path:
    return p.home / ".local/share/p/jobs"


def put_record(p: PClient, text: str, name: str | None = None) -> Path:
    """A record file written behind p's back (a new file: the jobs
    directory's mtime changes, as with any editor that renames)."""
    path = jobs_dir(p) / (name or f"{uuid.uuid4().hex}.json")
    path.write_text(text)
    return path


def good_record(job_id: str, **changes: object) -> dict[str, object]:
    return {"id": job_id, "worker": "w1", "cwd": "~/project", "command": "make", "status": "done",
            "exit_code": 0, "started_at": 1.7e9, "ended_at": 1.7e9 + 5, "synced": False,
            "checked_at": 1.7e9, **changes}


def test_damaged_record_values_name_the_file_and_the_field(p1: PClient) -> None:
    """1b: a record's values are checked before anything sorts or prints
    them; a bad one names its file and field, never `internal error`."""
    p1("-n", "--", "true", check=True)
    ran_before = 1
    for field, raw in (("started_at", '"yesterday"'), ("ended_at", "Infinity"), ("ended_at", "NaN"),
                       ("status", '"exploded"'), ("exit_code", '"3"'), ("command", "[1, 2]"),
                       ("checked_at", "-Infinity"), ("worker", "5")):
        job_id = uuid.uuid4().hex
        text = json.dumps(good_record(job_id, **{field: "@"})).replace('"@"', raw)
        path = put_record(p1, text, name=f"{job_id}.json")
        for args in (("ls",), ("ls", "--all"), ("ls", "--json")):
            listing = p1(*args)
            assert listing.returncode == 0, listing.stderr
            assert "internal error" not in listing.stderr and "Traceback" not in listing.stderr
            (line,) = [line for line in listing.stderr.splitlines() if str(path) in line]
            assert f"'{field}'" in line, line
        listed = {job["id"] for job in p1.jobs()}
        assert job_id not in listed and len(listed) == ran_before  # every good job, none of the damaged
        ran = p1("-n", "--", "echo", "still works")
        assert ran.stdout == "still works\n", ran.stderr
        ran_before += 1
        # Naming the damaged job itself says what is wrong with it.
        error = one_line_error(p1("logs", job_id[:10]))
        assert str(path) in error and f"'{field}'" in error
        path.unlink()


def test_one_damaged_record_hides_no_other_and_doctor_moves_it_aside(p1: PClient) -> None:
    """2: `p ls` lists every readable job and names each damaged file; p
    changes nothing until `p doctor --fix` moves them to the quarantine."""
    ids = [p1("-n", "-d", "--", "true", check=True).stdout.strip() for _ in range(3)]
    for job_id in ids:
        p1("wait", job_id, check=True)
    foreign = uuid.uuid4().hex
    damaged = [
        put_record(p1, "{not json"),
        put_record(p1, json.dumps(good_record(ids[0])), name=f"{foreign}.json"),  # a foreign id
        put_record(p1, json.dumps(good_record(uuid.uuid4().hex, started_at="yesterday"))),
        put_record(p1, json.dumps([1, 2, 3]), name="notes.json"),
    ]
    contents = {path: path.read_bytes() for path in damaged}

    def listed() -> tuple[set[str], list[str]]:
        result = p1("ls")
        assert result.returncode == 0, result.stderr
        shown = {line.split()[0] for line in result.stdout.splitlines()[2:]}
        return shown, [line for line in result.stderr.splitlines() if "damaged job record" in line]

    shown, lines = listed()
    assert shown == {job_id[:8] for job_id in ids}
    assert len(lines) == len(damaged)
    for path, line in zip(sorted(damaged), sorted(lines)):
        assert str(path) in line and line.startswith("p: ")
    assert any("not JSON" in line for line in lines) and any(f"holds job {ids[0]}" in line for line in lines)
    # Other commands work, and nothing was rewritten or deleted.
    assert p1("-n", "--", "echo", "ok").stdout == "ok\n"
    assert p1("logs", ids[1]).returncode == 0
    assert {path: path.read_bytes() for path in damaged} == contents
    # A garbage index, then a missing one, is rebuilt from the records.
    index = p1.home / ".local/share/p/jobs.index.json"
    for damage in ("garbage\n\x00{", None):
        if damage is None:
            index.unlink()
        else:
            index.write_text(damage)
        shown, lines = listed()
        assert len(shown) == 4 and len(lines) == len(damaged)
        assert json.loads(index.read_text().splitlines()[0])["count"] == 4
    doctor = p1("doctor")
    assert doctor.returncode == 1
    assert all(str(path) in doctor.stdout for path in damaged)
    fixed = p1("doctor", "--fix")
    assert fixed.returncode == 0, fixed.stderr
    quarantine = p1.home / ".local/share/p/quarantine"
    assert sorted(path.read_bytes() for path in quarantine.iterdir()) == sorted(contents.values())
    assert not any(path.exists() for path in damaged)
    shown, lines = listed()
    assert len(shown) == 4 and lines == []
    assert p1("doctor").returncode == 0


def test_config_errors_name_the_file_and_the_key(p1: PClient) -> None:
    """3: a config that is wrong is one line naming file and key, exit 2."""
    config = p1.home / ".config/p/config.yaml"
    original = config.read_text()
    for text, says in (("workers: 5\n", "'workers'"),
                       (original + "default_worker: nosuch\n", "'default_worker' names 'nosuch'"),
                       (original.replace("connection: ", "connection: [1] # "), "'connection'"),
                       (original + "ssh_options: yes\n", "'ssh_options'"),
                       ("workers:\n  - name: w1\n   connection: [\n", "line 3, column 4")):
        config.write_text(text.replace("default_worker: w1\n", "") if "nosuch" in text else text)
        # A default that names no worker is an error only where it is used.
        for args in (("-n", "--", "true"),) + ((("worker", "ls"),) if "nosuch" not in text else ()):
            result = p1(*args)
            line = one_line_error(result)
            assert result.returncode == 2, (text, result.stderr)
            assert str(config) in line and says in line, (text, line)
    config.write_text(original)
    assert "unknown worker 'nosuch'" in one_line_error(p1("nosuch", "--", "true"))
    assert p1("nosuch", "--", "true").returncode == 2
    # A directory where a file belongs: one clear line.
    config.unlink()
    config.mkdir()
    line = one_line_error(p1("worker", "ls"))
    assert f"config file {config} is a directory" in line
    config.rmdir()
    config.write_text(original)
    p1("-n", "-d", "--", "true", check=True)
    index = p1.home / ".local/share/p/jobs.index.json"
    index.unlink()
    index.mkdir()
    for args in (("ls",), ("-n", "--", "true")):
        result = p1(*args)
        assert f"the job index {index} is a directory" in one_line_error(result)
        assert result.returncode == 2


def test_a_deleted_current_directory_is_one_line_and_ls_still_works(p1: PClient) -> None:
    """4: the shell keeps a directory that was removed under it."""
    gone = p1.home / "gone"

    def in_deleted_dir(*args: str) -> subprocess.CompletedProcess[str]:
        gone.mkdir()
        return subprocess.run(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "$0" "$@"', P_BIN, *args],
                              capture_output=True, text=True, env=p1.env, timeout=60, stdin=subprocess.DEVNULL)

    for args in (("--", "true"), ("-n", "--", "true"), ("w1", "-d", "--", "true")):
        result = in_deleted_dir(*args)
        assert one_line_error(result) == "p: the current directory no longer exists; cd to one that does"
        assert result.returncode == 2
    p1("-n", "-d", "--", "true", check=True)
    listing = in_deleted_dir("ls")
    assert listing.returncode == 0, listing.stderr
    assert len(listing.stdout.splitlines()) == 3 and listing.stderr == ""


def test_fifty_cold_runs_at_once_share_one_master(p1: PClient, tmp_path: Path) -> None:
    """5: fifty runs to a worker with no master all succeed through one
    master: one connection to sshd, far under its MaxStartups (10:30:100),
    and no other `ssh -MNf` left behind."""
    p1.close_masters()
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "ssh.log"
    # The real ssh, with each invocation's arguments written down.
    (shim / "ssh").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {shutil.which("ssh")} "$@"\n')
    (shim / "ssh").chmod(0o755)
    env = {**p1.env, "PATH": f"{shim}:{p1.env['PATH']}"}
    runs = [subprocess.Popen([P_BIN, "-n", "-d", "--", "true"], env=env, cwd=p1.workdir,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(50)]
    results = [(run.wait(timeout=240), *run.communicate()) for run in runs]
    failed = [err for code, _, err in results if code != 0]
    assert failed == [], failed[:3]
    assert len({out.strip() for _, out, _ in results}) == 50
    starts = [line for line in log.read_text().splitlines() if "ControlMaster=yes" in line]
    assert len(starts) == 1, starts
    assert len(master_pids(p1)) == 1, master_pids(p1)
    assert len(p1.jobs()) == 50


def test_ls_never_waits_on_a_worker_whose_link_is_cut(p1: PClient) -> None:
    """9: with the worker's port dropped, `p ls` answers from the store each
    time and says so in one line; it never waits for ssh's timeouts."""
    job_id = p1("-n", "-d", "--", "sleep 600", check=True).stdout.strip()
    assert "running" in p1("ls", check=True).stdout
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(p1.sshd.port), "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        for _ in range(3):
            start = time.monotonic()
            result = p1("ls", timeout=60)
            took = time.monotonic() - start
            assert result.returncode == 0, result.stderr
            assert took < 5, took
            assert job_id[:8] in result.stdout and "unknown" in result.stdout
            about_w1 = [line for line in result.stderr.splitlines() if "worker w1" in line]
            assert len(about_w1) == 1, result.stderr
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    p1.close_masters()
    assert p1("stop", "--grace", "1", job_id, timeout=60).returncode == 0
    assert "stopped" in p1("ls", "--refresh", check=True).stdout


def test_a_refused_forward_is_blamed_only_when_the_master_saw_it(tmp_path: Path) -> None:
    """5: an error names a cause only when that cause was observed: here the
    worker's sshd really refuses stream-local forwarding, and says so."""
    from sshd_worker import SshdWorkers

    # A Match block overrides the global `AllowStreamLocalForwarding yes`.
    root = Path(f"/var/tmp/p-tests-nofwd-{uuid.uuid4().hex[:8]}")
    workers = SshdWorkers(str(root), extra_sshd_config="Match all\n    AllowStreamLocalForwarding no\n")
    workers.start(["nofwd"])
    (tmp_path / "home").mkdir()
    client = PClient(tmp_path / "home", workers)
    try:
        registered = client.register("nofwd")
        assert registered.returncode != 0
        line = registered.stderr.splitlines()[-1]  # after a note on how the agent runs there
        assert "AllowStreamLocalForwarding" in line and "nofwd" in line, line
    finally:
        client.close()
        workers.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_every_file_p_keeps_on_the_client_is_private(p1: PClient) -> None:
    """Config, records, index, locks, logs and sockets name hosts, commands
    and paths: owner only, files 0600 and directories 0700 (issue 17, 11),
    also those an older p made looser."""
    p1("-n", "--", "true", check=True)
    config = p1.home / ".config" / "p"
    config.chmod(0o755)
    (config / "config.yaml").chmod(0o644)
    (p1.home / ".local" / "share" / "p" / ".lock").chmod(0o644)
    # (The runtime directory itself is made 0700 again at every command.)
    p1("-d", "-n", "--", "true", check=True)
    p1("ls", check=True)
    roots = [p1.home / ".config" / "p", p1.home / ".local" / "share" / "p", p1.runtime / "p"]
    loose = []
    for root in roots:
        assert root.is_dir(), root
        for path in [root, *root.rglob("*")]:
            mode = path.lstat().st_mode & 0o777
            if path.is_socket() or path.is_symlink():
                continue
            if (path.is_dir() and mode != 0o700) or (path.is_file() and mode != 0o600):
                loose.append(f"{oct(mode)} {path}")
    assert not loose, "\n".join(loose)
