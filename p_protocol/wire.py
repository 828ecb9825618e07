"""The messages between client and agent, each one declared once.

One JSON object per line over the agent's unix socket: a request from the
client (``{"op": ..., fields}``) and one reply from the agent (``{"ok":
true, fields}`` or ``{"ok": false, "error": text}``); a ``streams`` request
is followed by raw bytes until the agent closes the connection. ``SPECS``
declares every request's fields and its reply's; the agent checks requests
with ``check_request`` and the client checks replies with ``check_reply``.
An unknown, missing or ill-typed field is a ``ProtocolError`` naming it,
never a silent default. docs/protocol.md holds the table ``table()``
prints (a test compares them): ``python3 -m p_protocol.wire``.
"""

from __future__ import annotations

import json
import math
from enum import Enum

from . import JOB_ID_RE, SPARE_KEY_RE, WORKER_NAME_RE, ProtocolError
from .jobspec import FIELDS as SPEC_FIELDS
from .jobspec import REQUIRED, is_env, is_names
from .states import State

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_LINE = 1 << 20
# A followed `events` stream sends an empty line at least this often while
# nothing happens: a reader hearing nothing for a few of these has lost it.
EVENTS_HEARTBEAT = 5.0
MAX_GPU = 1023  # GPU indices: 0 to this


class Op(str, Enum):
    """Every request a client may send (see ``SPECS`` for their fields)."""

    HELLO = "hello"
    PREPARE = "prepare"
    START = "start"
    STATUS = "status"
    WAIT = "wait"
    LOGS = "logs"
    STOP = "stop"
    INTERRUPT = "interrupt"
    ATTACH = "attach"
    REMOVE = "remove"
    CLEAN = "clean"
    RESOLVE = "resolve"
    WORKDIRS = "workdirs"
    SCRATCH = "scratch"
    EVENTS = "events"
    INFO = "info"
    CHECK = "check"
    CONFIGURE = "configure"
    APPROVE = "approve"
    REJECT = "reject"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float) and math.isfinite(value)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and JOB_ID_RE.match(value) is not None


def _is_indices(value: object) -> bool:
    return isinstance(value, list) and len(set(value)) == len(value) and all(
        _is_int(i) and 0 <= i <= MAX_GPU for i in value)


def _fits(fields: tuple[Field, ...], value: object) -> bool:
    if not isinstance(value, dict):
        return False
    try:
        check_fields(fields, value, "")
    except ProtocolError:
        return False
    return True


# Each kind of value: (what the error calls it, its check).
KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    # What the client prints as it is: no terminal escapes, no line breaks.
    "text": ("printable text", lambda v: isinstance(v, str) and v.isprintable()),
    "strs": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an integer", _is_int),
    "count": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "size": ("an integer from 1 to 10000", lambda v: _is_int(v) and 1 <= v <= 10000),
    "positive": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "seconds": ("a finite number >= 0", lambda v: _is_number(v) and v >= 0),
    "duration": ("a finite number of seconds > 0", lambda v: _is_number(v) and v > 0),
    "time": ("a finite number", _is_number),
    "id": ("a job id (32 lowercase hex digits)", _is_id),
    "ids": ("a list of job ids", lambda v: isinstance(v, list) and all(_is_id(i) for i in v)),
    "indices": ("a list of distinct GPU indices (0 to 1023)", _is_indices),
    "gpus": ('a list of distinct GPU indices, or "auto"', lambda v: v == "auto" or _is_indices(v)),
    "info": ("a worker's state", lambda v: _fits(INFO, v)),
    "spare": ("a spare key (16 lowercase hex digits)", lambda v: isinstance(v, str)
              and SPARE_KEY_RE.match(v) is not None),
    "worker": ("a worker name", lambda v: isinstance(v, str) and WORKER_NAME_RE.match(v) is not None),
    "env": ("an object of shell variable names to strings", is_env),
    "names": ("a list of distinct shell variable names", is_names),
    "spec": ("a job spec", lambda v: _fits(SPEC, v)),
    "state": ("a job state", lambda v: v in {state.value for state in State}),
    "job": ("a job", lambda v: _fits(JOB, v)),
    "rusage": ("a job's resource use", lambda v: _fits(RUSAGE, v)),
    "jobs": ("an object of job ids to jobs or null", lambda v: isinstance(v, dict) and all(
        _is_id(k) and (j is None or _fits(JOB, j)) for k, j in v.items())),
}


class Field:
    """One field of a message. ``optional``: may be absent (then None);
    ``nullable``: may be null."""

    __slots__ = ("name", "kind", "optional", "nullable")

    def __init__(self, name: str, kind: str, *, optional: bool = False, nullable: bool = False) -> None:
        assert kind in KINDS, kind
        self.name, self.kind, self.optional, self.nullable = name, kind, optional, nullable

    def __str__(self) -> str:
        return f"{self.name}{'?' if self.optional else ''}: {self.kind}{' or null' if self.nullable else ''}"


class Spec:
    __slots__ = ("request", "reply", "streams", "doc")

    def __init__(self, request: tuple[Field, ...], reply: tuple[Field, ...], doc: str, *,
                 streams: bool = False) -> None:
        self.request, self.reply, self.doc, self.streams = request, reply, doc, streams


F = Field
ID = F("id", "id")
# A job's specification (p_protocol.jobspec.JobSpec): its fields as declared there.
SPEC = tuple(F(name, kind, optional=default is not REQUIRED, nullable=default is None)
             for name, kind, default in SPEC_FIELDS)
# What an agent says of a job, in every reply that carries one.
# ``reason``: why a `queued` job waits, or why a `lost` job's end was not
# recorded, when the worker knows; ``engine_id``, ``node_list``: the job's id in
# its engine and where it runs, for engines that schedule (Slurm);
# ``position``: a job's place in its worker's queue, from 1, while it waits
# there; ``gpu_ids``: the GPUs it was given (`-g N`), which it sees as
# CUDA_VISIBLE_DEVICES; ``rusage``: what its processes used, once it ended,
# where the worker measured it (agent/p_agent/rusage.py).
JOB = (ID, F("state", "state"), F("started_at", "time", nullable=True), F("ended_at", "time", nullable=True),
       F("exit_code", "int", nullable=True), F("attachable", "bool"), F("reason", "text", optional=True, nullable=True),
       F("engine_id", "text", optional=True, nullable=True), F("node_list", "text", optional=True, nullable=True),
       F("rusage", "rusage", optional=True, nullable=True), F("position", "count", optional=True, nullable=True),
       F("gpu_ids", "indices", optional=True))
# A finished job's resource use: seconds from start to end, CPU seconds of its
# processes in user mode and in the kernel, and the peak resident memory of
# its largest process in bytes (null: the worker could not tell).
RUSAGE = (F("wall", "seconds"), F("user", "seconds"), F("sys", "seconds"), F("max_rss", "count", nullable=True))
# What an agent says of its worker (agent/p_agent/queue.py): ``slots`` null
# is no cap; ``running`` the jobs holding slots; ``queued`` the jobs waiting
# (pending approval included), of which ``pending`` await approval; ``gpus``
# declared, or detected (``gpus_detected``) with `nvidia-smi -L`; ``load``
# the 1-minute load average, over ``cpus``.
INFO = (F("slots", "count", nullable=True), F("running", "count"), F("queued", "count"), F("pending", "ids"),
        F("gpus", "indices"), F("gpus_free", "indices"), F("gpus_detected", "bool"), F("drained", "bool"),
        F("approval", "bool"), F("load", "seconds"), F("cpus", "count"))

SPECS: dict[Op, Spec] = {
    Op.HELLO: Spec((), (F("version", "str"), F("protocol", "int"), F("home", "str"), F("engine", "str")),
                   "who answers: checked before anything else is sent"),
    Op.PREPARE: Spec((ID, F("spare", "spare", optional=True, nullable=True),
                      F("source", "id", optional=True, nullable=True)),
                     (F("reused", "bool"), F("origin", "id", optional=True, nullable=True)),
                     "the job's workdir, from the spare copy of its directory if there is one (`origin`: the job "
                     "whose synced workdir that spare is an exact copy of, when the worker knows); `source`: "
                     "a copy of that job's workdir instead (`p rerun --same-files`)"),
    Op.START: Spec((ID, F("spec", "spec"), F("cwd", "str"), F("worker", "worker"), F("cols", "size"),
                    F("rows", "size"), F("tty", "bool"), F("attach", "bool"),
                    F("spare", "spare", optional=True, nullable=True), F("secrets", "env", optional=True),
                    F("ctrl_c_detaches", "bool", optional=True),
                    F("notify_command", "str", optional=True, nullable=True)),
                   (F("job", "job"), F("argv", "strs", nullable=True)),
                   "start the job as `spec` says (a `spec` object, below); `tty`: give it a terminal; "
                   "`attach`: a client is on its way to attach (`argv`, as for `attach`, says how); "
                   "`spare`: copy the synced workdir for the next job; `secrets`: the values of the "
                   "spec's secrets, which are never stored; `ctrl_c_detaches`: as for `attach`; "
                   "`notify_command`: a shell command the job's script runs when it ends"),
    Op.STATUS: Spec((F("ids", "ids"),), (F("jobs", "jobs"),), "the jobs, null for those the worker lacks"),
    Op.WAIT: Spec((ID, F("timeout", "seconds", optional=True, nullable=True), F("start", "bool", optional=True)),
                  (F("job", "job", nullable=True),),
                  "reply once the job has ended, or after `timeout` seconds with the job as it is then (so a "
                  "client can tell a long job from an agent that no longer answers); `start`: once it has left "
                  "the worker's queue (started, or ended unrun)"),
    Op.LOGS: Spec((ID, F("offset", "count"), F("follow", "bool")), (F("size", "count"),),
                  "the job's output from `offset`, raw bytes after the reply; `follow`: until it ends",
                  streams=True),
    Op.STOP: Spec((ID, F("grace", "seconds")), (F("job", "job", nullable=True),),
                  "SIGTERM to the job, SIGKILL after `grace` seconds"),
    Op.INTERRUPT: Spec((ID,), (), "SIGINT to the job (Ctrl+C off a terminal)"),
    Op.ATTACH: Spec((ID, F("ctrl_c_detaches", "bool", optional=True)), (F("argv", "strs", nullable=True),),
                    "the command that attaches a terminal to the job on the worker; null: nothing to attach to; "
                    "`ctrl_c_detaches`: in that terminal Ctrl+C detaches instead of reaching the job"),
    Op.REMOVE: Spec((ID, F("force", "bool"), F("spare", "spare", optional=True, nullable=True)), (),
                    "the job's files and workdir; `force`: stop it first; `spare`: also that spare copy"),
    Op.CLEAN: Spec((), (F("jobs", "ids"), F("workdirs", "count"), F("spares", "count")),
                   "every finished job's files, workdirs without a running job, every spare copy"),
    Op.RESOLVE: Spec((ID, F("path", "str")), (F("path", "str"), F("is_dir", "bool")),
                     "a path inside the job's workdir, symlinks resolved; escapes are refused"),
    Op.WORKDIRS: Spec((F("ids", "ids"),), (F("present", "ids"),), "which of the jobs' workdirs exist"),
    Op.SCRATCH: Spec((F("path", "str", optional=True, nullable=True),), (F("path", "text"), F("free", "count")),
                     "where workdirs and spares live and the bytes free there; `path`: move them there "
                     "first (refused while jobs run)"),
    Op.EVENTS: Spec((F("offset", "count"), F("follow", "bool", optional=True)), (F("size", "count"),),
                    "the worker's event log (`~/.p/events.jsonl`) from byte `offset`: whole JSON lines "
                    "after the reply; `follow`: then each new one as it comes, never ending (an empty "
                    "line every 5 s while none does)", streams=True),
    Op.INFO: Spec((), (F("worker", "info"),), "the worker's slots, queue, GPUs, drain, approval and load"),
    Op.CHECK: Spec((), (F("machine", "text"), F("missing", "strs"), F("scratch", "text"), F("free", "count")),
                   "what `p worker ls --check` shows: the machine (as `uname -m` says), which of the tools a "
                   "worker needs (tmux, rsync) its PATH lacks, where workdirs and spares live and the bytes "
                   "free there"),
    Op.CONFIGURE: Spec((F("slots", "count", optional=True), F("gpus", "gpus", optional=True),
                        F("drained", "bool", optional=True), F("approval", "bool", optional=True)),
                       (F("worker", "info"),),
                       "change the worker's settings, those given only: `slots` (0: no cap), `gpus` (\"auto\": "
                       "detect), `drained` (takes no new jobs), `approval` (new jobs wait for `approve`)"),
    Op.APPROVE: Spec((ID,), (F("job", "job", nullable=True),),
                     "let a job pending approval start in its turn"),
    Op.REJECT: Spec((ID,), (F("job", "job", nullable=True),), "end a job pending approval without running it"),
}


def check_fields(fields: tuple[Field, ...], message: dict[str, Any], what: str) -> dict[str, Any]:
    """``message`` held to ``fields``: a new dict with every declared field
    (None for an absent optional one), or a ProtocolError naming the field."""
    names = {field.name for field in fields}
    for name in message:
        if name not in names:
            raise ProtocolError(f"{what}: unknown field {name!r}")
    checked: dict[str, Any] = {}
    for field in fields:
        if field.name not in message:
            if not field.optional:
                raise ProtocolError(f"{what}: field {field.name!r} is missing")
            checked[field.name] = None
            continue
        value = message[field.name]
        if not (value is None and field.nullable):
            described, check = KINDS[field.kind]
            if not check(value):
                raise ProtocolError(f"{what}: field {field.name!r} must be {described}")
        checked[field.name] = value
    return checked


def check_request(message: dict[str, Any]) -> tuple[Op, dict[str, Any]]:
    try:
        op = Op(message.get("op"))
    except ValueError:
        raise ProtocolError(f"unknown request {message.get('op')!r}") from None
    fields = {name: value for name, value in message.items() if name != "op"}
    return op, check_fields(SPECS[op].request, fields, f"request {op.value}")


def check_reply(op: Op, message: dict[str, Any]) -> dict[str, Any]:
    """A successful reply (``ok`` true) held to its declaration."""
    fields = {name: value for name, value in message.items() if name != "ok"}
    return check_fields(SPECS[op].reply, fields, f"reply to {op.value}")


def request(op: Op, **fields: Any) -> dict[str, Any]:
    return {"op": op.value, **fields}


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError("message too long")
    try:
        message = json.loads(line, parse_constant=_no_constant)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def error(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text}


def table() -> str:
    """The requests as a Markdown table, for docs/protocol.md."""
    def fields(declared: tuple[Field, ...]) -> str:
        return ", ".join(f"`{field}`" for field in declared) or "–"

    rows = ["| request | fields | reply | what |", "| --- | --- | --- | --- |"]
    for op, spec in SPECS.items():
        reply = fields(spec.reply) + (", then raw bytes" if spec.streams else "")
        rows.append(f"| `{op.value}` | {fields(spec.request)} | {reply} | {spec.doc} |")
    job = ", ".join(f"`{field}`" for field in JOB)
    spec = ", ".join(f"`{field}`" for field in SPEC)
    rusage = ", ".join(f"`{field}`" for field in RUSAGE)
    info = ", ".join(f"`{field}`" for field in INFO)
    return "\n".join(rows) + (f"\n\nA `job` is an object with {job}.\n\nA `spec` is an object with {spec}."
                               f"\n\nA `rusage` is an object with {rusage}.\n\nAn `info` is an object with {info}.")


if __name__ == "__main__":
    print(table())
