"""Attach, detach, Ctrl+C and the "Job done" screen, driven like a person
would: `p` runs in a client-side tmux, keys go in with send-keys and the
screen is read with capture-pane."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import P_BIN, PClient
from helpers import eventually, one_line_error


class Screen:
    """A client-side tmux server with one window per command."""

    def __init__(self, p: PClient) -> None:
        self.p = p
        self.socket = str(p.runtime / "client-tmux.sock")
        self.windows = 0

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=True).stdout

    def start(self, *p_args: str, term: str = "xterm-256color") -> str:
        """Run `p p_args` in a new window; it prints p's exit status after."""
        script = self.p.home / f"window{self.windows}.sh"
        exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in self.p.env.items()
                          if key in ("HOME", "PATH", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                                     "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"))
        script.write_text(f"{exports}export TERM={term}\ncd {shlex.quote(str(self.p.workdir))}\n"
                          f"{shlex.join([P_BIN, *p_args])}\necho \"p-exit=$?\"\nsleep 600\n")
        name = f"w{self.windows}"
        self.windows += 1
        if self.windows == 1:
            self.tmux("new-session", "-d", "-s", "client", "-n", name, "-x", "160", "-y", "40", "sh", str(script))
        else:
            self.tmux("new-window", "-t", "client", "-n", name, "sh", str(script))
        return f"client:{name}"

    def text(self, target: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", target)

    def wait_for(self, target: str, pattern: str, timeout: float = 30) -> str:
        return str(eventually(lambda: re.search(pattern, self.text(target), re.MULTILINE)
                              and self.text(target), timeout=timeout))

    def keys(self, target: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", target, *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def screen(p1: PClient) -> Iterator[Screen]:
    s = Screen(p1)
    yield s
    s.close()


def test_attached_job_shows_status_bar_done_screen_and_exit_status(screen: Screen) -> None:
    window = screen.start("--", "echo hello-from-job; sleep 3; exit 7")
    shown = screen.wait_for(window, r"\[running\] \d:\d\d:\d\d")
    assert "hello-from-job" in shown
    # The status bar: short id, worker, command, status, elapsed time.
    assert re.search(r"p-[0-9a-f]{8} w1 echo hello-from-job; sleep 3; exit 7 \[running\] 0:00:0\d", shown)
    done = screen.wait_for(window, r"--- Job done \[exit 7\]\. Press any key to detach\. ---")
    assert "hello-from-job" in done
    screen.keys(window, "x")
    after = screen.wait_for(window, r"p-exit=7")
    assert re.search(r"p: job [0-9a-f]{8} done \[exit 7\]", after)
    (record,) = screen.p.jobs()
    assert record["status"] == "done" and record["exit_code"] == 7


def test_detach_keeps_the_job_and_attach_returns_to_it(screen: Screen) -> None:
    window = screen.start("--", "echo first-run; sleep 120")
    screen.wait_for(window, r"\[running\]")
    screen.keys(window, "C-b", "d")
    detached = screen.wait_for(window, r"p-exit=0")
    assert "detached from job" in detached
    (record,) = screen.p.jobs()
    assert record["status"] == "running"
    job = str(record["id"])

    again = screen.start("attach", job[:5])
    shown = screen.wait_for(again, r"\[running\]")
    assert "first-run" in shown  # the same session, its scrollback intact
    # Ctrl+C goes to the job as SIGINT, as in a local terminal.
    screen.keys(again, "C-c")
    screen.wait_for(again, r"--- Job done \[exit 130\]")
    screen.keys(again, "Enter")
    screen.wait_for(again, r"p-exit=130")
    (record,) = screen.p.jobs()
    assert record["status"] == "done" and record["exit_code"] == 130


def test_attach_to_a_finished_job_shows_its_done_screen_once(screen: Screen) -> None:
    p = screen.p
    job = p("-d", "--", "echo quick-output; exit 5", check=True).stdout.strip()
    p("wait", job)
    window = screen.start("attach", job)
    shown = screen.wait_for(window, r"--- Job done \[exit 5\]")
    assert "quick-output" in shown
    screen.keys(window, "q")
    screen.wait_for(window, r"p-exit=5")
    # The session is closed now: attach says to read the logs instead.
    message = one_line_error(p("attach", job))
    assert "has finished" in message and "p logs" in message
    assert p("logs", job).stdout == "quick-output\n"


def test_not_a_terminal_never_attaches(p1: PClient) -> None:
    # Piped: the output streams, no tmux client, and the exit status is the job's.
    command = f"set -o pipefail; {shlex.quote(P_BIN)} -- 'echo piped; exit 2' | cat"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=p1.env,
                            cwd=p1.workdir, timeout=60)
    assert result.stdout == "piped\n"
    assert result.returncode == 2


def test_sync_shows_progress_on_a_terminal_when_slow(screen: Screen) -> None:
    # Enough data that the sync takes well over the half second after which
    # the bar appears.
    with open(screen.p.workdir / "big.bin", "wb") as out:
        out.write(os.urandom(400 * 1024 * 1024))
    window = screen.start("--", "echo synced-and-ran")

    def first_seen() -> str | None:
        text = screen.text(window)
        if "syncing to w1" in text:
            return "progress bar"
        return "job output" if "synced-and-ran" in text else None

    assert eventually(first_seen, timeout=120, interval=0.05) == "progress bar"
    screen.wait_for(window, r"--- Job done \[exit 0\]", timeout=120)


def test_attach_works_from_a_terminal_the_worker_does_not_know(screen: Screen) -> None:
    window = screen.start("--", "echo $TERM; sleep 1", term="p-unknown-terminal")
    shown = screen.wait_for(window, r"--- Job done \[exit 0\]")
    assert "tmux" in shown or "screen" in shown  # the job sees tmux's own TERM
    screen.keys(window, "x")
    screen.wait_for(window, r"p-exit=0")


def test_no_ssh_chatter_after_an_attach(screen: Screen) -> None:
    p = screen.p
    # The user's own ssh config, without the tests' `LogLevel ERROR`.
    chatty = p.home / "ssh_config"
    chatty.write_text(Path(p.sshd.ssh_config).read_text().replace("    LogLevel ERROR\n", ""))
    p("worker", "register", "w1", "-n", "chatty", "--ssh-config", str(chatty), check=True)
    window = screen.start("chatty", "-n", "--", "echo hi")
    screen.wait_for(window, r"--- Job done \[exit 0\]")
    screen.keys(window, "x")
    after = screen.wait_for(window, r"p-exit=0")
    assert "Shared connection" not in after and "closed." not in after
