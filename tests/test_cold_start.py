"""A cold start (no SSH master, no agent running) from the facts the last
probe of the worker found: one round trip fewer, and never a wrong start
when the worker changed since (issue 13, P1-cold)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import PClient


@pytest.fixture
def counted(p1: PClient) -> Path:
    """Every script p runs on the worker (`ssh ... sh -s`) leaves a line in the returned file."""
    shim = p1.home / "ssh-shim"
    shim.mkdir()
    log = p1.home / "scripts.log"
    (shim / "ssh").write_text(f'#!/bin/sh\ncase "$*" in *"sh -s") echo x >> {log} ;; esac\nexec /usr/bin/ssh "$@"\n')
    (shim / "ssh").chmod(0o755)
    p1.env["PATH"] = f"{shim}:{p1.env['PATH']}"
    return log


def cold(p: PClient) -> None:
    """As after a night offline: the master is gone and so is the agent."""
    p.close_masters()
    for pidfile in (p.worker_home("w1") / ".p/run").glob("agent-*.pid"):
        try:
            os.kill(int(pidfile.read_text()), 9)
        except (ProcessLookupError, ValueError):
            pass


def scripts_run(p: PClient, log: Path, *args: str) -> int:
    log.unlink(missing_ok=True)
    result = p(*args)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
    return len(log.read_text().splitlines()) if log.exists() else 0


def facts_file(p: PClient) -> Path:
    (found,) = (p.home / ".cache/p/workers").glob("facts-*.json")
    return found


def test_a_cold_start_from_remembered_facts_runs_one_script_instead_of_two(p1: PClient, counted: Path) -> None:
    assert p1("-n", "--", "true").returncode == 0  # the agent is installed, the facts remembered
    assert oct(facts_file(p1).stat().st_mode & 0o777) == "0o600"
    cold(p1)
    assert scripts_run(p1, counted, "-n", "--", "echo ok") == 1  # the agent's start only: no probe
    cold(p1)
    facts_file(p1).unlink()
    assert scripts_run(p1, counted, "-n", "--", "echo ok") == 2  # probe, then start


@pytest.mark.parametrize("change", ["another build installed", "agent changed in place", "agent deleted",
                                    "home moved", "damaged file", "launcher damaged"])
def test_remembered_facts_that_no_longer_hold_cost_only_the_probe(p1: PClient, counted: Path, change: str) -> None:
    assert p1("-n", "--", "true").returncode == 0
    cold(p1)
    bin_dir = p1.worker_home("w1") / ".p/bin"
    if change == "another build installed":
        for sums in bin_dir.glob("*.sha256"):
            sums.write_text("0" * 64 + "\n")
    elif change == "agent changed in place":  # same inode and size, one byte differs
        (agent,) = [path for path in bin_dir.glob("p-agent-*") if path.suffix != ".sha256"]
        data = bytearray(agent.read_bytes())
        data[len(data) // 2] ^= 1
        agent.write_bytes(data)
    elif change == "agent deleted":
        for agent in bin_dir.iterdir():
            agent.unlink()
    elif change == "launcher damaged":  # its first line, which names its content, intact
        (launcher,) = (p1.worker_home("w1") / ".p/run").glob("agent-*.start")
        launcher.write_text(launcher.read_text().splitlines()[0] + "\nexit 1\n")
    elif change == "home moved":
        facts = facts_file(p1)
        facts.write_text(facts.read_text().replace(str(p1.worker_home("w1")), "/nonexistent/home"))
    else:
        facts_file(p1).write_text('{"home": 7, "installed": [')
    assert scripts_run(p1, counted, "-n", "--", "echo ok") >= 2  # probed after all, and the job ran
    cold(p1)
    assert scripts_run(p1, counted, "-n", "--", "echo ok") == 1  # remembered afresh
