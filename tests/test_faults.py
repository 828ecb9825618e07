"""Faults and hostile input (issue 12), each on a real worker: a disk that
fills during a sync, an agent that lies or says nothing, signals at any
moment, many clients at once."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import P_BIN, PClient
from helpers import eventually, job_dir, one_line_error, worker_processes
from test_trust_worker import ask, give, small_filesystem, start_agent_of_version, stop_agent

from p_protocol import PROTOCOL, VERSION


def test_a_sync_that_fills_the_workers_disk_says_so_and_leaves_nothing(p1: PClient) -> None:
    home = p1.worker_home("w1")
    workdirs = home / ".p" / "workdirs"
    assert p1("-n", "--", "true").returncode == 0  # the agent and its directories are there
    spares = set((home / ".p" / "spares").iterdir())  # other tests' directories'
    with small_filesystem(workdirs, p1.sshd.workers["w1"].user):
        (p1.workdir / "big").write_bytes(os.urandom(3 << 20))
        message = one_line_error(p1("--", "true"))
        assert "no space left on w1 under" in message and "p worker clean w1" in message, message
        assert list(workdirs.iterdir()) == []  # nothing half-synced that a later run would trust
        assert set((home / ".p" / "spares").iterdir()) == spares
        (p1.workdir / "big").unlink()
        (p1.workdir / "small").write_text("fits\n")
        result = p1("--", "cat small")
        assert (result.returncode, result.stdout) == (0, "fits\n"), result.stderr


# An agent that answers its hello as this release's agent would, then lies
# in one way (argv: socket path, version, protocol, home, how to lie).
LYING_AGENT = r'''
import json, os, socket, sys, threading, time
path, version, protocol, home, how = sys.argv[1:6]
OTHER = "0" * 32

def serve(conn):
    reader = conn.makefile("rb")
    while True:
        line = reader.readline()
        if not line:
            return
        op = json.loads(line).get("op")
        if op == "hello":
            reply = {"ok": True, "version": version, "protocol": int(protocol), "home": home, "engine": "tmux"}
            conn.sendall(json.dumps(reply).encode() + b"\n")
        elif how == "garbage":
            conn.sendall(b"}{ \x1b[31m not json\n")
        elif how == "huge":
            try:
                for _ in range(100):
                    conn.sendall(b"x" * (1 << 20))
            except OSError:
                return
        elif how == "other":
            job = {"id": OTHER, "state": "done", "started_at": 1.0, "ended_at": 2.0, "exit_code": 0,
                   "attachable": False}
            reply = {"ok": True, "jobs": {OTHER: job}} if op == "status" else {"ok": True, "job": job}
            conn.sendall(json.dumps(reply).encode() + b"\n")
        else:  # silent
            time.sleep(3600)

if os.path.exists(path):
    os.unlink(path)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(8)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
'''


@pytest.mark.parametrize("how", ["garbage", "huge", "other", "silent"])
def test_a_lying_agent_never_hangs_or_crashes_the_client(p1: PClient, how: str) -> None:
    home = p1.worker_home("w1")
    job = p1("-n", "-d", "--", "sleep 300", check=True).stdout.strip()
    stop_agent(home)
    script = home / "lying_agent.py"
    give(p1, "w1", script, LYING_AGENT)
    spec = p1.sshd.workers["w1"]
    liar = subprocess.Popen(["runuser", "-u", spec.user, "--", "python3", str(script),
                             str(home / ".p" / "run" / f"agent-{VERSION}.sock"), VERSION, str(PROTOCOL),
                             str(home), how], stdin=subprocess.DEVNULL)
    try:
        eventually(lambda: (home / ".p" / "run" / f"agent-{VERSION}.sock").exists())
        asked = {"other": (["stop", "--grace", "1", job], ["wait", job]), "silent": (["stop", job],)}
        for args in asked.get(how, (["stop", "--grace", "1", job], ["logs", job])):
            started = time.monotonic()
            result = p1(*args, timeout=150)
            message = one_line_error(result)
            assert "w1" in message and "\x1b" not in message, message
            if how == "other":
                assert "other jobs than it was asked about" in message, message
            assert time.monotonic() - started < 120
        listed = p1("ls", "--refresh", timeout=30)
        assert listed.returncode == 0 and "Traceback" not in listed.stderr
        assert job[:8] in listed.stdout
    finally:
        # runuser passes no SIGKILL on to its child: end the liar itself.
        subprocess.run(["pkill", "-KILL", "-u", spec.user, "-f", str(script)], capture_output=True)
        liar.wait()


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed its own SIGTERM handler (p's main
    does so for the run form before it connects)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True  # it has ended: nothing to wait for
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & 1 << (signal.SIGTERM - 1))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_any_moment_reaches_the_job_or_leaves_none(p1: PClient, signum: int) -> None:
    """Ctrl+C or SIGTERM at ten random moments each, from connecting to
    streaming: `p` exits as the signal says, without a traceback, and
    nothing it started runs on."""
    (p1.workdir / "data").write_bytes(os.urandom(1 << 20))  # a sync that takes a moment
    seed = secrets.randbits(32)
    moments = random.Random(seed)
    for attempt in range(10):
        marker = f"p-signal-{secrets.token_hex(4)}"
        process = subprocess.Popen([P_BIN, "--", f"echo started; sleep 60; : {marker}"], env=p1.env,
                                   cwd=p1.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        eventually(lambda pid=process.pid: _handles_sigterm(pid), timeout=10, interval=0.005)
        delay = moments.uniform(0, 1.5)
        time.sleep(delay)
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
        where = f"seed {seed}, attempt {attempt}, {delay:.2f}s: {out!r} {err!r}"
        assert process.returncode == 128 + signum, where
        assert "Traceback" not in err, where
        eventually(lambda marker=marker: not worker_processes(p1, "w1", marker), timeout=20)
    assert "running" not in p1("ls", "--refresh", check=True).stdout


def test_sixty_runs_to_three_workers_from_two_clients_lose_nothing(p1: PClient) -> None:
    """Two client processes each start ten runs to each of three workers at
    once, while `p ls` reads the store: no record lost, no id repeated, and
    every `p ls` in the middle of it answers."""
    p1.register("w2", check=True)
    p1("worker", "register", "w1", "-n", "w3", "--ssh-config", p1.sshd.ssh_config, check=True)
    for worker in ("w1", "w2", "w3"):
        p1(worker, "-n", "--", "true", check=True)  # warm: the test is of the store, not of cold starts
    before = {job["id"] for job in p1.jobs()}

    def client() -> list[subprocess.Popen[str]]:
        return [subprocess.Popen([P_BIN, worker, "-n", "-d", "--", "true"], env=p1.env, cwd=p1.workdir,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(10) for worker in ("w1", "w2", "w3")]

    runs = client() + client()
    listings = []
    while any(run.poll() is None for run in runs):
        listings.append(p1("ls", "--json"))
    results = [(run.wait(timeout=240), *run.communicate()) for run in runs]
    assert [err for code, _, err in results if code != 0] == []
    ids = [out.strip() for _, out, _ in results]
    assert len(set(ids)) == 60
    assert listings and all(listing.returncode == 0 for listing in listings), [
        listing.stderr for listing in listings if listing.returncode != 0][:2]
    for listing in listings:
        json.loads(listing.stdout)
    every = json.loads(p1("ls", "--json", "--all", check=True).stdout)
    assert {job["id"] for job in every} == before | set(ids)


def test_jobs_of_an_older_agent_are_seen_followed_stopped_and_waited_for(p1: PClient) -> None:
    """After an upgrade: jobs an older release's agent started (and its
    client recorded) are visible to this client, which follows their
    output, stops one and waits for the other's exit status."""
    home = p1.worker_home("w1")
    p1("-n", "--", "true", check=True)  # this release's agent is there too
    older = start_agent_of_version(p1, "w1", "0.0.8")
    jobs = {"ends": "echo old-output; sleep 3; exit 7", "runs": "sleep 300"}
    ids = {name: uuid.uuid4().hex for name in jobs}
    store = Path(p1.env["XDG_DATA_HOME"]) / "p" / "jobs"
    try:
        for name, command in jobs.items():
            ask(older, "start", id=ids[name], spec={"command": command}, cwd="~/elsewhere", worker="w1", cols=80,
                rows=24, tty=False, attach=False)
            # As the older client recorded it.
            (store / f"{ids[name]}.json").write_text(json.dumps({
                "id": ids[name], "worker": "w1", "cwd": "~/elsewhere", "command": command, "status": "running",
                "started_at": time.time(), "synced": False, "checked_at": time.time()}))
        listed = p1("ls", "--refresh", check=True).stdout
        assert ids["ends"][:8] in listed and ids["runs"][:8] in listed
        follow = p1("logs", "-f", ids["ends"], check=True)
        assert follow.stdout == "old-output\n"
        waited = p1("wait", ids["ends"])
        assert waited.returncode == 7, waited.stderr
        assert p1("stop", "--grace", "1", ids["runs"]).returncode == 0
        shown = {job["id"]: job["status"] for job in json.loads(p1("ls", "--json", "--all", check=True).stdout)}
        assert (shown[ids["ends"]], shown[ids["runs"]]) == ("done", "stopped")
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int((job_dir(home, ids["runs"]) / "pgid").read_text()), signal.SIGKILL)
        subprocess.run(["pkill", "-u", p1.sshd.workers["w1"].user, "-f", "p_agent serve"], capture_output=True)


def test_ls_shows_a_command_with_terminal_escapes_escaped(p1: PClient) -> None:
    job = p1("-n", "-d", "--", "true # \x1b]0;PWNED\x07 \x1b[31m", check=True).stdout.strip()
    listed = p1("ls", check=True).stdout
    assert job[:8] in listed and "\x1b" not in listed and "\\x1b]0;PWNED\\x07" in listed
