"""`p ls`: every job, from the local store."""

from __future__ import annotations

import json
import time

from .. import output
from ..reconcile import refresh_for_ls
from ..store import UNKNOWN, Store, damaged_line
from ..table import clip, duration, render

HEADERS = ("ID", "WORKER", "CWD", "COMMAND", "STATUS", "DURATION")
# --wide: what the worker measured of each ended job (output.rusage_cells).
WIDE_HEADERS = ("CPU USER", "CPU SYS", "MAX RSS")

# Without --all, `p ls` shows this many of the newest jobs, and every running one.
SHOWN = 30


def ls(as_json: bool, refresh: bool, show_all: bool = False, wide: bool = False) -> int:
    store = Store()
    if show_all:
        records = store.all()
        total = len(records)
    else:
        records, total = store.recent(SHOWN)
    # Before anything that may fail: a damaged record is news on its own.
    for path, problem in store.damaged:
        output.say(damaged_line(path, problem) + "; `p doctor --fix` moves it aside")
    refresh_for_ls(store, records, force=refresh)
    records.sort(key=lambda record: record.started_at, reverse=True)
    now = time.time()
    if as_json:
        print(json.dumps([output.job_json(record, now) for record in records], indent=1))
        return 0
    print(render(HEADERS + WIDE_HEADERS if wide else HEADERS, [
        (record.short_id, record.worker, clip(record.cwd, 30), clip(record.command, 30),
         output.status_text(record), duration(output.seconds(record, now)),
         *(output.rusage_cells(record) if wide else ()))
        for record in records
    ]))
    if total > len(records):
        output.say(f"p: {total - len(records)} older jobs not shown; `p ls --all` lists every job")
    if any(record.status == UNKNOWN for record in records):
        output.say("p: `unknown` jobs may have ended while no p command watched their worker; "
                   "the next `p ls` asks those workers (`p ls --refresh` does it now)")
    return 0
