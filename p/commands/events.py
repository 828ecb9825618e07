"""`p events [--follow] [--json] [ID]`: what happened to jobs, in order.

This client's event log (p/events.py): every transition it caused or
learned. `--follow` keeps printing events as they are appended, as
`tail -f` does, until Ctrl+C.
"""

from __future__ import annotations

import json
import time

from .. import paths
from ..errors import PError
from ..events import Event, LogReader, warn_damaged
from ..store import ID_PREFIX_RE
from ..table import clock

# How often --follow looks for new lines: a person reading them notices no lag.
FOLLOW_EVERY = 0.25


def events(job: str | None, follow: bool, as_json: bool) -> int:
    wanted = _prefix(job)
    reader = LogReader(paths.events_file())
    found = _read(reader, wanted)
    if wanted is not None and not follow:
        ids = {event.id for event in found}
        if not ids:
            raise PError(f"no events of a job matching {job!r}; `p events` lists them all")
        if len(ids) > 1:
            shown = ", ".join(sorted(job_id[:12] for job_id in ids)[:6])
            raise PError(f"job id {job!r} is ambiguous: {shown}; type more characters")
    _print(found, as_json)
    while follow:
        time.sleep(FOLLOW_EVERY)
        _print(_read(reader, wanted), as_json)
    return 0


def _prefix(job: str | None) -> str | None:
    if job is None:
        return None
    wanted = job.strip().lower().removeprefix("p-")
    if not ID_PREFIX_RE.match(wanted):
        raise PError(f"{job!r} is not a job id; job ids are hex, as `p ls` shows them")
    return wanted


def _read(reader: LogReader, wanted: str | None) -> list[Event]:
    found, damaged = reader.read_new()
    warn_damaged(reader.path, damaged)
    return [event for event in found if wanted is None or event.id.startswith(wanted)]


def _print(found: list[Event], as_json: bool) -> None:
    for event in sorted(found, key=lambda event: event.time):
        if as_json:
            print(json.dumps(event.to_json(), separators=(",", ":")), flush=True)
        else:
            print(f"{clock(event.time)}  {event.id[:8]}  {event.worker or '-':<12}  {event.text():<24}  "
                  f"{event.source}", flush=True)
