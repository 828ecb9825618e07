"""Worker registration and management against real sshd workers."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import PClient
from helpers import one_line_error


def test_first_registered_worker_becomes_default_and_agent_runs(p: PClient) -> None:
    result = p.register("w1")
    assert result.returncode == 0, result.stderr
    assert "registered worker w1 (default)" in result.stderr
    assert "x86_64" in result.stderr
    config = yaml.safe_load((p.home / ".config/p/config.yaml").read_text())
    assert config["default_worker"] == "w1"
    assert config["workers"][0]["connection"] == "w1"
    # The agent is installed under ~/.p/bin and serves on its socket.
    home = p.worker_home("w1")
    assert list((home / ".p/bin").glob("p-agent-*"))
    assert list((home / ".p/run").glob("agent-*.sock"))

    second = p.register("w2")
    assert second.returncode == 0, second.stderr
    assert "(default)" not in second.stderr
    listing = p("worker", "ls", check=True).stdout
    assert [line.split()[:3] for line in listing.splitlines()[2:]] == [["w1", "w1", "*"], ["w2", "w2", "-"]]

    p("worker", "default", "w2", check=True)
    assert yaml.safe_load((p.home / ".config/p/config.yaml").read_text())["default_worker"] == "w2"


def test_register_with_explicit_name_and_port_form(p: PClient) -> None:
    user = p.sshd.workers["w1"].user
    result = p.register(f"{user}@127.0.0.1:{p.sshd.port}", "-n", "byport")
    assert result.returncode == 0, result.stderr
    assert "registered worker byport" in result.stderr
    run = p("byport", "--", "echo", "via port")
    assert run.stdout == "via port\n"


def test_register_explains_each_failure_in_one_line(p: PClient) -> None:
    assert "host key" in one_line_error(p.register("stranger"))
    assert "refused the SSH login" in one_line_error(p.register("refused"))
    assert "cannot reach" in one_line_error(p.register("down"))
    assert "lacks tmux" in one_line_error(p.register("notmux"))
    odd = one_line_error(p.register("oddarch"))
    assert "mips" in odd and "x86_64, aarch64, riscv64" in odd
    assert "no such option" in one_line_error(p("worker", "register", "-oProxyCommand=touch /tmp/x"))
    assert "not an SSH target" in one_line_error(p("worker", "register", "--", "-oProxyCommand=x"))
    # Nothing was registered by the failures.
    assert "no worker registered" in p("worker", "ls").stderr


def test_duplicate_name_and_unknown_worker(p1: PClient) -> None:
    assert "exists already" in one_line_error(p1.register("w1"))
    assert "unknown worker 'nosuch'" in one_line_error(p1("nosuch", "--", "true"))
    assert "unknown worker" in one_line_error(p1("worker", "default", "nosuch"))


def test_worker_ls_check_asks_all_in_parallel(p: PClient) -> None:
    p.register("w1", check=True)
    p.register("w2", check=True)
    # Registered while reachable, then its sshd "moved": a dead port.
    config_path = p.home / ".config/p/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["workers"].append({"name": "gone", "connection": "down", "ssh_config": p.sshd.ssh_config})
    config_path.write_text(yaml.safe_dump(config))
    result = p("worker", "ls", "--check")
    assert result.returncode == 1
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert rows["w1"].rstrip().endswith("ok") and "x86_64" in rows["w1"]
    assert rows["w2"].rstrip().endswith("ok")
    assert "cannot reach" in rows["gone"]
    # Commands on an unreachable worker fail in one line too.
    assert "cannot reach worker gone" in one_line_error(p("gone", "--", "true"))


def test_an_agent_takes_forty_connections_at_once(p: PClient) -> None:
    # Forty names of one worker: forty masters, whose forwarded channels all
    # reach the one agent at the same moment (as forty `p` started at once).
    p.register("w1", check=True)
    config_path = p.home / ".config/p/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["workers"] = [{**config["workers"][0], "name": f"n{i}"} for i in range(40)]
    config_path.write_text(yaml.safe_dump(config))
    for _ in range(3):
        result = p("worker", "ls")
        assert result.returncode == 0, result.stdout + result.stderr
        assert len([row for row in result.stdout.splitlines()[2:] if row.rstrip().endswith(" ok")]) == 40
    # None was refused on the way: each was connected at its first try,
    # none taken for gone and made again the cold way.
    refused = [line for log in (p.runtime / "p").glob("master-*.log") for line in log.read_text().splitlines()
               if "open failed" in line]
    assert not refused, refused[:3]


def test_worker_ls_check_sees_a_tool_gone_since_the_agent_started(p: PClient) -> None:
    # The worker's agent runs; then rsync leaves its PATH (here: the PATH
    # directory noslurm's sessions get, shared by that worker's agent).
    p.register("noslurm", check=True)
    assert p("worker", "ls", "--check").returncode == 0
    rsync = Path(p.sshd.root) / "path-noslurm" / "rsync"
    target = rsync.readlink()
    rsync.unlink()
    try:
        result = p("worker", "ls", "--check")
        assert result.returncode == 1
        row = result.stdout.splitlines()[2]
        assert row.startswith("noslurm ") and "lacks rsync; install rsync there" in row, result.stdout
    finally:
        rsync.symlink_to(target)
    assert p("worker", "ls", "--check").returncode == 0


def test_worker_rm_refuses_while_jobs_run(p1: PClient) -> None:
    job = p1("-d", "-n", "--", "sleep", "60", check=True).stdout.strip()
    assert "running job" in one_line_error(p1("worker", "rm", "w1"))
    p1("stop", job, "--grace", "1", check=True)
    result = p1("worker", "rm", "w1")
    assert result.returncode == 0, result.stderr
    assert "no worker registered" in p1("worker", "ls").stderr


def test_malformed_config_is_one_line(p: PClient) -> None:
    config = p.home / ".config/p/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("workers: [\n")
    assert "not valid YAML" in one_line_error(p("worker", "ls"))
    assert "not valid YAML" in one_line_error(p("--", "true"))
    config.write_text("workers:\n  - name: 'bad name!'\n    connection: x\n")
    assert "not a plain name" in one_line_error(p("worker", "ls"))
