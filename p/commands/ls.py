"""`p ls`: every job, from the local store."""

from __future__ import annotations

import json
import time

from p_protocol import State

from .. import output
from ..reconcile import refresh_for_ls
from ..store import JobRecord, Store
from ..table import clip, duration, render

HEADERS = ("ID", "WORKER", "CWD", "COMMAND", "STATUS", "DURATION")


def _seconds(record: JobRecord, now: float) -> float | None:
    if record.ended_at is not None:
        return record.ended_at - record.started_at
    if record.status == State.RUNNING.value:
        return now - record.started_at
    return None


# Without --all, `p ls` shows this many of the newest jobs, and every running one.
SHOWN = 30


def ls(as_json: bool, refresh: bool, show_all: bool = False) -> int:
    store = Store()
    if show_all:
        records = store.all()
        total = len(records)
    else:
        records, total = store.recent(SHOWN)
    refresh_for_ls(store, records, force=refresh)
    records.sort(key=lambda record: record.started_at, reverse=True)
    now = time.time()
    if as_json:
        rows = [{**record.to_dict(), "short_id": record.short_id, "duration": _seconds(record, now)}
                for record in records]
        print(json.dumps(rows, indent=1))
        return 0
    print(render(HEADERS, [
        (record.short_id, record.worker, clip(record.cwd, 30), clip(record.command, 30),
         output.status_text(record), duration(_seconds(record, now)))
        for record in records
    ]))
    if total > len(records):
        output.say(f"p: {total - len(records)} older jobs not shown; `p ls --all` lists every job")
    if any(record.status == State.UNKNOWN.value for record in records):
        output.say("p: `unknown` jobs may have ended while no p command watched their worker; "
                   "the next `p ls` asks those workers (`p ls --refresh` does it now)")
    return 0
