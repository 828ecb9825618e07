"""`p show <id> [--json]`: everything about one job.

What the record holds (command, worker, workdir, cwd, the spec: env, secret
names, limits; times, state, exit status, resource use, what the sync sent)
and the job's events. A job still active is asked about first, so its state
is the worker's; a worker that cannot be asked is one line, and the record
is shown as it is.
"""

from __future__ import annotations

import json
import time

from p_protocol.jobspec import FIELDS as SPEC_FIELDS

from .. import config as config_module
from .. import link as link_module
from .. import output
from ..errors import PError
from ..events import client_events
from ..reconcile import query
from ..store import JobRecord, Store
from ..table import clock, duration, size


def show(job: str, as_json: bool) -> int:
    store = Store()
    record = store.find(job)
    if not record.finished and config_module.load().has_worker(record.worker):
        record = _refreshed(store, record)
    events = client_events(record.id)
    now = time.time()
    if as_json:
        print(json.dumps({**output.job_json(record, now), "events": [event.to_json() for event in events]},
                         indent=1))
        return 0
    print("\n".join(f"{label:<12}{value}" for label, value in _lines(record, now)))
    print("events")
    for event in events:
        print(f"  {clock(event.time)}  {event.text():<24}  {event.source}")
    return 0


def _refreshed(store: Store, record: JobRecord) -> JobRecord:
    try:
        link = link_module.connect(record.worker)
    except PError as exc:
        output.say(output.about_worker(record.worker, f"{exc.message} (showing the job as last recorded)"))
        return record
    try:
        record = query(link.agent, [record])[0]
    finally:
        link.close()
    store.save(record)
    return record


def _lines(record: JobRecord, now: float) -> list[tuple[str, str]]:
    spec = record.spec
    user, system, peak = output.rusage_cells(record)
    wall = (output.rusage(record) or {}).get("wall")
    lines = [("job", record.id), ("command", spec.command), ("worker", record.worker),
             ("state", output.status_text(record)),
             ("exit status", "-" if record.exit_code is None else str(record.exit_code)),
             ("cwd", record.cwd), ("workdir", record.workdir or "unknown"),
             ("started", clock(record.started_at)),
             ("ended", "-" if record.ended_at is None else clock(record.ended_at)),
             ("duration", duration(output.seconds(record, now))),
             ("wall", f"{wall:.2f}s" if isinstance(wall, (int, float)) else "-" if user == "-" else "unknown"),
             ("cpu user", user), ("cpu sys", system), ("max rss", peak),
             ("synced", _synced(record))]
    if record.rerun_of is not None:
        lines.append(("rerun of", record.rerun_of))
    lines += [(name, f"{variable}={_shown(value)}") for name, (variable, value) in
              zip(["env"] + [""] * len(spec.env), spec.env.items())] or [("env", "-")]
    lines.append(("secrets", ", ".join(spec.secrets) or "-"))
    for name, _, default in SPEC_FIELDS[3:]:  # after command, env, secrets
        value = getattr(spec, name)
        lines.append((name.replace("_", " "), "-" if value == default else _spec_value(name, value)))
    return lines


def _synced(record: JobRecord) -> str:
    if not record.synced:
        return "no (-n)"
    if record.sync_files is None or record.sync_bytes is None:
        return "yes (what it sent is unknown)"
    return f"{record.sync_files} file(s) sent, {size(record.sync_bytes)} over the link"


def _spec_value(name: str, value: object) -> str:
    if name == "timeout" and isinstance(value, (int, float)):
        return duration(value)
    if name in ("max_output", "mem") and isinstance(value, int):
        return size(value)
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return str(value)


def _shown(value: str) -> str:
    """A variable's value on one line: as is when plain, quoted otherwise."""
    return value if value.isprintable() and value == value.strip() else repr(value)
