"""Links that break and come back (issue 12): the verbs that follow a job
(`p logs -f`, `p wait`, an attached terminal, the streaming run) ride out a
cut of the worker's port, made with iptables rules that name only this
test's sshd, and resume exactly where the output stopped."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import P_BIN, PClient
from helpers import Screen, eventually
from sshd_worker import SshdWorkers

# Lines a job prints, one every half second, numbered so a lost or repeated
# line shows.
COUNT = "for i in $(seq 1 {n}); do echo {tag}-$i; sleep 0.5; done"


@pytest.fixture(scope="module")
def cut_sshd() -> Iterator[SshdWorkers]:
    """An sshd of its own: cutting its port cuts no other test's worker."""
    root = Path(f"/var/tmp/p-tests-cut-{secrets.token_hex(4)}")
    root.mkdir(mode=0o755)
    workers = SshdWorkers(str(root)).start(["cut"])
    yield workers
    workers.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pc(tmp_path: Path, cut_sshd: SshdWorkers) -> Iterator[PClient]:
    client = PClient(tmp_path, cut_sshd)
    client.register("cut", check=True)
    yield client
    client.close()


@contextmanager
def port_cut(port: int) -> Iterator[None]:
    """Every packet to or from ``port`` on loopback dropped, until the end."""
    rules = [["INPUT", "-i", "lo", "-p", "tcp", direction, str(port), "-j", "DROP"]
             for direction in ("--dport", "--sport")]
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule], check=True)


def popen(p: PClient, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([P_BIN, *args], env=p.env, cwd=p.workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def numbered(output: str, tag: str) -> list[int]:
    return [int(n) for n in re.findall(rf"^{tag}-(\d+)\r?$", output, re.MULTILINE)]


def ride_out_a_cut(p: PClient, seconds: float, *, another_run: bool, reconnects: bool) -> None:
    """The four followers of a job started, the port cut for ``seconds``
    once output flows, then each must end as if nothing happened;
    ``reconnects``: whether the cut is long enough to break the link."""
    lines = int((seconds + 25) * 2)
    job = p("-n", "-d", "--", COUNT.format(n=lines, tag="job") + "; exit 4", check=True).stdout.strip()
    logs = popen(p, "logs", "-f", job)
    waiter = popen(p, "wait", job)
    stream = popen(p, "-n", "--", COUNT.format(n=lines, tag="stream") + "; exit 3")
    screen = Screen(p)
    try:
        window = screen.start("attach", job)
        screen.wait_for(window, r"job-\d+")
        time.sleep(2)  # output flowing on every follower
        with port_cut(p.sshd.port):
            if another_run:
                time.sleep(6)
                # A run started during the cut finds the master mute: it may
                # fail, but must not take the other sessions down with it.
                other = p("-n", "--", "echo other", timeout=120)
                assert "Traceback" not in other.stderr
            time.sleep(max(0.0, seconds - (6 + 10 if another_run else 0)))
        errors = []
        out, err = logs.communicate(timeout=seconds + 120)
        assert logs.returncode == 0, err
        assert numbered(out, "job") == list(range(1, lines + 1)), err
        errors.append(err)
        out, err = stream.communicate(timeout=120)
        assert stream.returncode == 3, err
        assert numbered(out, "stream") == list(range(1, lines + 1)), err
        errors.append(err)
        _, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 4, err
        errors.append(err)
        for err in errors:
            # A link that broke is said once, and once that it is back.
            assert err.count("broke while") == (1 if reconnects else 0), err
            assert err.count("is back") == (1 if reconnects else 0), err
        screen.wait_for(window, r"Job done \[exit 4\]", timeout=120)
        screen.keys(window, "q")
        screen.wait_for(window, r"p-exit=4", timeout=60)
        text = screen.text(window)
        assert "Traceback" not in text
    finally:
        for process in (logs, waiter, stream):
            if process.poll() is None:
                process.kill()
        screen.close()


def test_followers_ride_out_a_short_cut_while_another_run_starts(pc: PClient) -> None:
    """20 s: TCP retransmits carry the sessions; the run started meanwhile
    puts the mute master aside instead of closing it under them."""
    ride_out_a_cut(pc, 20, another_run=True, reconnects=False)


def test_followers_reconnect_after_a_cut_that_kills_the_master(pc: PClient) -> None:
    """Two minutes: the master's keepalives give up (30 s), every follower
    says so once, reconnects with backoff when the port is back and resumes
    where it stopped."""
    logs = popen(pc, "logs", "-f", "x")  # an unknown job: one line, no hang
    _, err = logs.communicate(timeout=60)
    assert logs.returncode != 0 and "Traceback" not in err
    ride_out_a_cut(pc, 120, another_run=False, reconnects=True)


def test_a_follower_gives_up_after_the_configured_time(pc: PClient) -> None:
    config = Path(pc.env["XDG_CONFIG_HOME"]) / "p" / "config.yaml"
    config.write_text(config.read_text() + "reconnect_for: 20s\n")
    job = pc("-n", "-d", "--", "sleep 300", check=True).stdout.strip()
    logs = popen(pc, "logs", "-f", job)
    time.sleep(2)
    with port_cut(pc.sshd.port):
        out, err = logs.communicate(timeout=180)
    lines = [line for line in err.splitlines() if line.strip()]
    assert logs.returncode == 255, err
    assert "reconnecting" in lines[0] and "0:00:20" in lines[0]
    assert "stayed down" in lines[-1] and f"p logs -f {job[:8]}" in lines[-1]
    assert "Traceback" not in err
    eventually(lambda: pc("stop", "--grace", "1", job, timeout=60).returncode == 0, timeout=60)
