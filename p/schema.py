"""The JSON that `p ls --json`, `p show --json`, `p events --json` and
`p worker ls --json` print, declared once: docs/json.md is generated from
these tables (`python3 -m p.schema`; a test compares) and the tests hold
real outputs to them with ``problems``.

Stable: a field may be added (here, with its doc), never renamed, retyped
or removed. Only the tests import this module.
"""

from __future__ import annotations

import math

from p_protocol.states import State

# Each field: (name, type, when it is null or None if never, what it holds).
# Types: string, integer, number, boolean, strings (an array of strings),
# integers (an array of integers),
# env (an object of variable names to strings), or the name of another table
# here (an object of that shape), `array of ` one.
Table = tuple[tuple[str, str, "str | None", str], ...]

STATUSES = ", ".join(f"`{state.value}`" for state in State)

JOB: Table = (
    ("id", "string", None, "the job id: 32 lowercase hex digits"),
    ("short_id", "string", None, "its first 8 digits, as `p ls` shows it; any unique prefix names the job"),
    ("worker", "string", None, "the worker's name"),
    ("cwd", "string", None, "the client directory it was started from (`~` for the home directory)"),
    ("workdir", "string", "for jobs started before p recorded it",
     "its work directory on the worker, as a path there"),
    ("command", "string", None, "the command, run by the worker user's login shell"),
    ("status", "string", None, f"one of {STATUSES}, or `unknown` (running when last heard of; it may "
     "have ended since). Later versions may add states"),
    ("exit_code", "integer", "until it ends, and for a lost job", "its exit status"),
    ("started_at", "number", None, "when it started (Unix time, client clock; after the sync)"),
    ("ended_at", "number", "until it ends", "when it ended (client clock: start plus the worker's duration)"),
    ("duration", "number", "when nobody knows (not running, end unknown)",
     "seconds it ran, or has run so far"),
    ("checked_at", "number", None, "when a worker last told p this job's state (client clock)"),
    ("synced", "boolean", None, "false for `-n`: nothing synced, an empty workdir"),
    ("sync_files", "integer", "not synced, or rsync did not say", "regular files the sync sent (not those "
     "already on the worker)"),
    ("sync_bytes", "integer", "not synced, or rsync did not say", "bytes the sync sent over the link"),
    ("excludes", "strings", None, "its sync's `--exclude` patterns (applied again by `p rerun`)"),
    ("spare", "string", "not synced (also a `p rerun --same-files`)",
     "names the worker's spare copy of the synced directory"),
    ("rerun_of", "string", "not made by `p rerun`", "the id of the job `p rerun` made it from"),
    ("reason", "string", "mostly", "why it is `queued` (Slurm's reason: `Resources`, `Priority`) or `lost`, "
     "when the worker knows"),
    ("engine_id", "string", "on workers that run jobs themselves (tmux)", "its id in the engine that "
     "scheduled it: the Slurm job id"),
    ("node_list", "string", "until the engine placed it, and on tmux workers", "the node(s) Slurm gave it "
     "(Slurm's NodeList)"),
    ("pool", "string", "not placed from a pool", "the pool its worker was chosen from (`p @POOL`)"),
    ("position", "integer", "unless it waits (`queued`, `pending-approval`)",
     "its place in its worker's queue, from 1, when last heard of"),
    ("gpu_ids", "integers", None, "the worker's GPUs it was given (`-g N`), as `CUDA_VISIBLE_DEVICES` says"),
    ("rusage", "rusage", "while it runs, or when the worker could not measure it",
     "what its processes used, measured by the worker once it ended"),
    ("env", "env", None, "its variables (`-e`, `--env-file`): names to values"),
    ("secrets", "strings", None, "the names of its secrets (`--secret`); values are never kept"),
    ("timeout", "number", "no `--timeout`", "seconds it may run (`--timeout`)"),
    ("max_output", "integer", "no `--max-output`", "bytes of output kept (`--max-output`)"),
    ("gpus", "integer", None, "GPUs asked for (`-g`), 0 for none"),
    ("cpus", "integer", "not asked for", "CPUs asked for (`--cpus`, Slurm)"),
    ("mem", "integer", "not asked for", "bytes of memory asked for (`--mem`, Slurm)"),
    ("nodes", "integer", "not asked for", "nodes asked for (`--nodes`, Slurm)"),
    ("sbatch_args", "strings", None, "`--sbatch-arg` words, as given"),
    ("pull", "strings", None, "`--pull` paths, copied back from its workdir when p sees it end"),
)
RUSAGE: Table = (
    ("wall", "number", None, "seconds from its start to its end, on the worker"),
    ("user", "number", None, "CPU seconds in user mode, of all its processes"),
    ("sys", "number", None, "CPU seconds in the kernel, of all its processes"),
    ("max_rss", "integer", "where the worker cannot tell", "peak resident memory of its largest process, bytes"),
)
EVENT: Table = (
    ("time", "number", None, "when it happened (Unix time, by the clock of whoever wrote it)"),
    ("event", "string", None, "what happened: `submitted`, `started`, `ended`, `stopped`, `lost`, `removed`, "
     "`refused` (the worker would not start it), or the name of a state a job entered; later versions may "
     "add more"),
    ("id", "string", "for an event of a worker itself (later versions: drained, resumed)", "the job's id"),
    ("worker", "string", "when its writer did not know", "the worker's name"),
    ("status", "string", "when its writer did not say", "the job's status after the event"),
    ("exit_code", "integer", "unless it ended with one", "its exit status"),
    ("reason", "string", "mostly", "why, when its writer knows (a lost job's cause)"),
    ("source", "string", None, "`client`: this client's log; `worker`: the worker's (`~/.p/events.jsonl`)"),
)
SHOW: Table = (*JOB, ("events", "array of event", None, "its events, oldest first"))
WORKER: Table = (
    ("name", "string", None, "the worker's name"),
    ("connection", "string", None, "`user@host`, `user@host:port` or an ssh config alias"),
    ("default", "boolean", None, "whether it is the default worker"),
    ("ssh_config", "string", "none set for it", "the ssh config file used for it"),
    ("engine", "string", None, "what runs its jobs (`tmux` or `slurm`)"),
    ("check", "check", "without `--check`", "what its agent found there (the `check` request)"),
    ("pools", "strings", None, "the pools it is in (`p @POOL -- cmd`), as this client's config says"),
    ("state", "worker_state", "when its agent did not answer within 5 s (20 s with `--check`)", "what its agent said"),
    ("problem", "string", "when its agent answered", "why it did not, as one line"),
)
WORKER_STATE: Table = (
    ("slots", "integer", "no cap", "how many jobs may run there at once (`--slots`)"),
    ("slots_used", "integer", None, "jobs running there (that the queue started)"),
    ("queued", "integer", None, "jobs waiting in its queue, those pending approval included"),
    ("pending_approval", "strings", None, "ids of the jobs waiting for `p approve`"),
    ("gpus", "integers", None, "its GPU indices, declared (`--gpus`) or detected"),
    ("gpus_free", "integers", None, "those no running job holds"),
    ("gpus_detected", "boolean", None, "whether `gpus` came from `nvidia-smi -L` rather than `--gpus`"),
    ("drained", "boolean", None, "whether it refuses new jobs (`p worker drain`)"),
    ("require_approval", "boolean", None, "whether new jobs wait for `p approve`"),
    ("load", "number", None, "its 1-minute load average"),
    ("cpus", "integer", None, "its CPUs"),
)
CHECK: Table = (
    ("ok", "boolean", None, "whether it answered and has what p needs"),
    ("arch", "string", "unless ok", "its `uname -m`"),
    ("scratch", "string", "unless ok", "where its workdirs and spare copies live"),
    ("free", "integer", "unless ok", "bytes free there"),
    ("problem", "string", "when ok", "what is wrong, as one line"),
)
TABLES: dict[str, Table] = {"job": JOB, "show": SHOW, "rusage": RUSAGE, "event": EVENT, "worker": WORKER,
                            "check": CHECK, "worker_state": WORKER_STATE}
# What prints what: each output's title in docs/json.md and its shape.
OUTPUTS = (("`p ls --json`", "an array of `job` objects, newest first", "job"),
           ("`p show --json`", "one `show` object: a `job` object and its events", "show"),
           ("`p events --json`", "one `event` object per line, oldest first", "event"),
           ("`p worker ls --json`", "an array of `worker` objects", "worker"),
           ("", "", "rusage"), ("", "", "check"), ("", "", "worker_state"))


def _is_type(value: object, kind: str, where: str) -> list[str]:
    if kind.startswith("array of "):
        if not isinstance(value, list):
            return [f"{where}: not an array"]
        return [problem for index, item in enumerate(value) for problem in
                _is_type(item, kind.removeprefix("array of "), f"{where}[{index}]")]
    if kind in TABLES:
        return problems(value, kind, where)
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "boolean": lambda v: isinstance(v, bool),
        "strings": lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        "integers": lambda v: isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v),
        "env": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(s, str)
                                                     for k, s in v.items()),
    }
    return [] if checks[kind](value) else [f"{where}: {value!r} is not of type {kind}"]


def problems(value: object, table: str, where: str = "") -> list[str]:
    """How ``value`` departs from the table ``table``: a field missing,
    undeclared (declare it here), of another type, or null where it may not be."""
    where = where or table
    if not isinstance(value, dict):
        return [f"{where}: not an object"]
    declared = {name: (kind, null) for name, kind, null, _ in TABLES[table]}
    found = [f"{where}: field {name!r} is not declared in p/schema.py (add it there and to docs/json.md)"
             for name in value if name not in declared]
    for name, (kind, null) in declared.items():
        if name not in value:
            found.append(f"{where}: field {name!r} is missing")
        elif value[name] is None:
            if null is None:
                found.append(f"{where}: field {name!r} is null")
        else:
            found += _is_type(value[name], kind, f"{where}.{name}")
    return found


def markdown() -> str:
    """The tables of docs/json.md."""
    parts = []
    for title, shape, table in OUTPUTS:
        heading = f"### `{table}`" + (f": {title}, {shape}" if title else "")
        rows = ["| field | type | null when | what |", "| --- | --- | --- | --- |"]
        for name, kind, null, doc in TABLES[table]:
            if table == "show" and name != "events":
                continue
            shown = f"`{kind}` object" if kind in TABLES else kind
            rows.append(f"| `{name}` | {shown} | {null or 'never'} | {doc} |")
        lead = "Every field of a `job` object, and:\n\n" if table == "show" else ""
        parts.append(f"{heading}\n\n{lead}" + "\n".join(rows))
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(markdown())
