"""`p show <id> [--json]`: everything about one job.

What the record holds (command, worker, workdir, cwd, the spec: env, secret
names, limits; times, state, exit status, resource use, what the sync sent)
and the job's events, this client's and its worker's. The worker is asked
for its events of the job and, for a job still active, its state; a worker
that cannot be asked is one line, and what this client knows is shown.
"""

from __future__ import annotations

import json
import time

from p_protocol.jobspec import FIELDS as SPEC_FIELDS

from .. import config as config_module
from .. import link as link_module
from .. import output
from ..errors import PError
from ..events import Event, client_events, worker_events
from ..reconcile import query
from ..store import JobRecord, Store
from ..table import clock, duration, size


def show(job: str, as_json: bool) -> int:
    store = Store()
    record = store.find(job)
    events = client_events(record.id)
    if config_module.load().has_worker(record.worker):
        record, on_worker = _asked(store, record)
        events = sorted(events + on_worker, key=lambda event: event.time)
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


def _asked(store: Store, record: JobRecord) -> tuple[JobRecord, list[Event]]:
    """The record brought up to date if the job was active, and the
    worker's events of it; a worker that cannot say is one line."""
    try:
        link = link_module.connect(record.worker)
        try:
            if not record.finished:
                record = query(link.agent, [record])[0]
                store.save(record)
            on_worker, _ = worker_events(link.agent, record.worker)
        finally:
            link.close()
    except PError as exc:
        output.say(output.about_worker(record.worker, f"{exc.message} (showing what this client knows)"))
        return record, []
    return record, [event for event in on_worker if event.id == record.id]


def _lines(record: JobRecord, now: float) -> list[tuple[str, str]]:
    spec = record.spec
    user, system, peak = output.rusage_cells(record)
    wall = (record.rusage or {}).get("wall")
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
    if record.excludes:
        lines.append(("excludes", " ".join(record.excludes)))
    for label, value in (("rerun of", record.rerun_of), ("engine id", record.engine_id),
                         ("node list", record.node_list)):
        if value is not None:
            lines.append((label, value))
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
