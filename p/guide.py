"""`p help agents`: a short guide for automated callers. docs/agents.md
holds the same text (a test compares them, and runs every command in it)."""

AGENTS = """\
# p for automated callers

For coding agents, CI jobs and scripts that drive `p` without a person.

## No terminal, no questions

Off a terminal (stdin or stdout not a TTY) `p` never attaches and never
prompts. The job gets no terminal either, as with `ssh -n host cmd`: its
stdin is `/dev/null`, it has no `TERM`, and its output (stdout and stderr
together) streams to `p`'s stdout. Anything `p` would ask a person is an
error instead: one line on stderr starting with `p:` that says what to do,
and a non-zero exit status. Nothing is printed in colour or redrawn.

## Run, wait, read

```sh
p -- make test                          # runs it here and now; exits with its status
id=$(p -d --timeout 30m -- make test)   # starts it; stdout is the 32-digit job id only
p wait "$id"                            # blocks until it ends; exits with its status
p logs "$id"                            # its output (-f follows it until it ends)
p show --json "$id"                     # everything about it, one JSON object
p events --json "$id"                   # what happened to it, one JSON object per line
p ls --json                             # running and recent jobs, newest first
p sync --dry-run                        # what a run from here would send, largest first
p stop "$id"                            # SIGTERM to the job's processes, SIGKILL 10 s later
```

A prefix of an id works wherever an id does, as long as it is unique; the
full id never is ambiguous. `--json` output is documented field by field in
docs/json.md; fields are only ever added, so read them by name.

## Exit statuses

* the job's own exit status, from `p -- cmd` and `p wait`;
* 124: its `--timeout` ended it (SIGTERM, then SIGKILL after 10 s);
* 255: the worker could not be reached, the link was lost, or the job was
  lost (its worker rebooted). A job whose link was lost runs on: `p wait`
  it again later;
* 2: a usage or config error; nothing ran;
* 1: any other error of `p` (one line on stderr).

## Rules of thumb

* Give every job that could hang a `--timeout`: it is kept on the worker,
  with no client connected.
* Start long jobs with `-d` and `p wait` them: a wait that loses its link
  reconnects by itself (for `reconnect_for`, 10 minutes by default).
* Secrets: `--secret NAME` passes `$NAME` from your environment to the job
  only; it is in no argv, record or log. Never put a secret in the command
  or in `-e NAME=VALUE` (those are kept in the job's record). An unset
  secret is an error (exit 2), never a prompt.
* Files that look secret (`.env`, `*.pem`, `*.key`, `id_*`, `.ssh/`) are
  not synced off a terminal: leave them out (`.gitignore`, `.pignore`,
  `--exclude PATTERN`), run with `-n` (no sync), or pass `--yes` when
  sending them is meant.
* Check what would be sent before a first run from a new directory:
  `p sync --dry-run`.
* Results come back with `--pull PATH` (or `p wait --pull PATH "$id"`);
  nothing else is synced back.
* Approval gates: on a worker set with `p worker set NAME
  --require-approval`, a job waits in state `pending-approval` until a
  person runs `p approve ID` (or `p reject ID`, which ends it unrun with
  exit status 126). Start such jobs with `-d`, say which id needs
  approval, and `p wait` it; never approve your own jobs.
"""
