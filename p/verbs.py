"""The command line's words, listed once (stdlib only: the fast path reads
them without importing typer). `p/main.py` parses the run form with them,
`p/cli.py` defines one typer command per verb (a test holds the two
together), and a worker may not be named like a verb."""

from __future__ import annotations

VERBS = ("ls", "attach", "logs", "wait", "show", "events", "rerun", "stop", "pull", "rm", "approve", "reject",
         "worker", "doctor", "sync", "port", "help")
# The run form's flags: `p [WORKER] [FLAGS] -- COMMAND...`.
RUN_FLAGS = {"-n": "no_sync", "--no-sync": "no_sync", "-d": "detach", "--detach": "detach",
             "-y": "assume_yes", "--yes": "assume_yes", "--dry-run-sync": "dry_run_sync",
             "--ctrl-c-detaches": "ctrl_c_detaches", "--notify": "notify"}
# The run form's worker, as a flag (`-w W`, `-w @POOL`) rather than the first word.
RUN_WORKER_FLAGS = ("-w", "--worker")
# The run form's flags that take a value (`-e K=V`, `--env=K=V`, `-eK=V`):
# what they set, in command-line order (a later -e overrides an earlier one,
# a later --timeout replaces an earlier one). p_protocol.jobspec.JobSpec
# holds what they mean.
RUN_VALUE_FLAGS = {"-e": "env", "--env": "env", "--env-file": "env_file", "--secret": "secret",
                   "--timeout": "timeout", "--max-output": "max_output", "-g": "gpus", "--gpus": "gpus",
                   "--cpus": "cpus", "--mem": "mem", "--nodes": "nodes", "--sbatch-arg": "sbatch_args",
                   "--pull": "pull", "--exclude": "exclude",
                   "-p": "port", "--port": "port"}
# How each is written, for messages.
RUN_VALUE_USAGE = {"env": "-e NAME=VALUE", "env_file": "--env-file FILE", "secret": "--secret NAME",
                   "timeout": "--timeout DURATION", "max_output": "--max-output SIZE", "gpus": "-g N",
                   "cpus": "--cpus N", "mem": "--mem SIZE", "nodes": "--nodes N",
                   "sbatch_args": "--sbatch-arg ARG", "pull": "--pull PATH",
                   "exclude": "--exclude PATTERN", "port": "-p REMOTE[:LOCAL]"}
