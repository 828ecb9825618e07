"""The agent's private tmux server: its own socket and config, never the user's."""

from __future__ import annotations

import subprocess

from p_protocol import Layout

# Why these options: the session must close when run.sh ends (it shows its own
# "Job done" screen first), the status bar must tick every second for the
# elapsed time, and a long build's output should stay scrollable.
TMUX_CONF = """\
set -g status-interval 1
set -g remain-on-exit off
set -g history-limit 50000
set -g status-left-length 160
set -g status-right ""
set -g status-style "bg=colour24,fg=colour255"
set -g window-status-format ""
set -g window-status-current-format ""
set -g set-titles on
set -g set-titles-string "#{session_name}"
set -g escape-time 10
"""


class TmuxError(Exception):
    pass


class Tmux:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def base(self) -> list[str]:
        return ["tmux", "-S", self.layout.tmux_socket, "-f", self.layout.tmux_conf]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                [*self.base(), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except FileNotFoundError:
            raise TmuxError("tmux is not installed on this worker") from None
        except subprocess.SubprocessError as exc:
            raise TmuxError(f"tmux {args[0]} failed: {exc}") from None
        if check and result.returncode != 0:
            raise TmuxError(f"tmux {args[0]} failed: {result.stderr.strip()}")
        return result

    def write_conf(self) -> None:
        with open(self.layout.tmux_conf, "w") as conf:
            conf.write(TMUX_CONF)

    def sessions(self) -> set[str]:
        """Names of open sessions; none when the server is not running."""
        result = self.run("list-sessions", "-F", "#{session_name}", check=False)
        if result.returncode != 0:
            return set()
        return set(result.stdout.split())

    def new_session(self, name: str, cols: int, rows: int, cwd: str, argv: list[str],
                    status_left: str, capture: str) -> None:
        """Start ``argv`` in a new session whose output goes to ``capture``.

        One tmux call chains the commands (`;`): the server runs a client's
        whole command list before it next reads any pane, so the pipe is in
        place before the job's first byte, and the job starts sooner.
        """
        target = name  # just created: an exact name
        self.run("new-session", "-d", "-s", name, "-x", str(cols), "-y", str(rows), "-c", cwd, *argv,
                 ";", "pipe-pane", "-t", target, capture,
                 ";", "set-option", "-t", target, "status-left", status_left)

    def kill_session(self, name: str) -> None:
        self.run("kill-session", "-t", "=" + name, check=False)


def escape_format(text: str) -> str:
    """Text shown literally in status-left, which is both a tmux format
    (``#``) and a strftime(3) string (``%``)."""
    return text.replace("#", "##").replace("%", "%%")
