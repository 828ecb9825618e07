"""Faults and hostile input (issue 12), each on a real worker: a disk that
fills during a sync, an agent that lies or says nothing, signals at any
moment, many clients at once."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import PClient
from helpers import eventually, one_line_error
from test_trust_worker import give, small_filesystem, stop_agent

from p_protocol import PROTOCOL, VERSION


def test_a_sync_that_fills_the_workers_disk_says_so_and_leaves_nothing(p1: PClient) -> None:
    home = p1.worker_home("w1")
    workdirs = home / ".p" / "workdirs"
    assert p1("-n", "--", "true").returncode == 0  # the agent and its directories are there
    with small_filesystem(workdirs, p1.sshd.workers["w1"].user):
        (p1.workdir / "big").write_bytes(os.urandom(3 << 20))
        message = one_line_error(p1("--", "true"))
        assert "no space left on w1 under" in message and "p worker clean w1" in message, message
        assert list(workdirs.iterdir()) == []  # nothing half-synced that a later run would trust
        assert list((home / ".p" / "spares").iterdir()) == []
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
        liar.kill()
        liar.wait()
