"""The command line's words, listed once (stdlib only: the fast path reads
them without importing typer). `p/main.py` parses the run form with them,
`p/cli.py` defines one typer command per verb (a test holds the two
together), and a worker may not be named like a verb."""

from __future__ import annotations

VERBS = ("ls", "attach", "logs", "wait", "stop", "pull", "rm", "worker", "doctor", "help")
# The run form's flags: `p [WORKER] [FLAGS] -- COMMAND...`.
RUN_FLAGS = {"-n": "no_sync", "--no-sync": "no_sync", "-d": "detach", "--detach": "detach",
             "-y": "assume_yes", "--yes": "assume_yes"}
# The run form's flags that take a value (`-e K=V`, `--env=K=V`), repeatable:
# what they collect, in command-line order (a later -e overrides an earlier one).
RUN_VALUE_FLAGS = {"-e": "env", "--env": "env", "--env-file": "env_file", "--secret": "secret"}
