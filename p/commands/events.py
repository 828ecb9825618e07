"""`p events [--follow] [--json] [ID]`: what happened to jobs, in order.

This client's event log (p/events.py: every transition it caused or
learned) merged with its workers' (`~/.p/events.jsonl` there, through
Op.EVENTS: what happened while no client watched). With ID, one job's, from
its worker; without, every registered worker's, asked in parallel (one that
cannot be reached is one line). `--follow` keeps printing events as they
are appended, as `tail -f` does, until Ctrl+C.
"""

from __future__ import annotations

import json
import queue
import threading
import time

from .. import config as config_module
from .. import link as link_module
from .. import output, paths
from ..errors import PError
from ..events import Event, LogReader, follow_worker, warn_damaged, worker_events
from ..store import ID_PREFIX_RE, Store
from ..table import clock

# How often --follow looks for new lines in the client's log.
FOLLOW_EVERY = 0.25


def events(job: str | None, follow: bool, as_json: bool) -> int:
    wanted = _prefix(job)
    client = LogReader(paths.events_file())
    found = _read(client, wanted)
    links = _connect(_workers(wanted, found))
    offsets: dict[str, int] = {}
    for name, link in links.items():
        try:
            worker_found, offsets[name] = worker_events(link.agent, name)
        except PError as exc:
            output.say(output.about_worker(name, f"{exc.message} (its events are not shown)"))
            continue
        found += [event for event in worker_found if _matches(event, wanted)]
    if wanted is not None and not follow:
        ids = {event.id for event in found}
        if not ids:
            raise PError(f"no events of a job matching {job!r}; `p events` lists them all")
        if len(ids) > 1:
            shown = ", ".join(sorted(str(job_id)[:12] for job_id in ids)[:6])
            raise PError(f"job id {job!r} is ambiguous: {shown}; type more characters")
    _print(found, as_json)
    if follow:
        _follow(client, wanted, {name: links[name] for name in offsets}, offsets, as_json)
    for link in links.values():
        link.close()
    return 0


def _prefix(job: str | None) -> str | None:
    if job is None:
        return None
    wanted = job.strip().lower().removeprefix("p-")
    if not ID_PREFIX_RE.match(wanted):
        raise PError(f"{job!r} is not a job id; job ids are hex, as `p ls` shows them")
    return wanted


def _matches(event: Event, wanted: str | None) -> bool:
    return wanted is None or event.id is not None and event.id.startswith(wanted)


def _read(reader: LogReader, wanted: str | None) -> list[Event]:
    found, damaged = reader.read_new()
    warn_damaged(reader.path, damaged)
    return [event for event in found if _matches(event, wanted)]


def _workers(wanted: str | None, found: list[Event]) -> list[str]:
    """The registered workers to ask: a job's own (by its record, or its
    events here), else all of them."""
    registered = [worker.name for worker in config_module.load().workers]
    if wanted is not None:
        named = {record.worker for record in Store().all() if record.id.startswith(wanted)}
        named |= {event.worker for event in found if event.worker is not None}
        if named & set(registered):
            return [name for name in registered if name in named]
    return registered


def _connect(names: list[str]) -> dict[str, link_module.Link]:
    """Links to the workers ``names``, made in parallel; one line for each
    that cannot be reached."""
    links: dict[str, link_module.Link] = {}

    def one(name: str) -> None:
        try:
            links[name] = link_module.connect(name)
        except PError as exc:
            output.say(output.about_worker(name, f"{exc.message} (its events are not shown)"))

    threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {name: links[name] for name in names if name in links}


def _follow(client: LogReader, wanted: str | None, links: dict[str, link_module.Link], offsets: dict[str, int],
            as_json: bool) -> None:
    """New events as they come, from the client's log and each worker's."""
    arrived: queue.Queue[Event] = queue.Queue()

    def watch(name: str) -> None:
        try:
            follow_worker(links[name].agent, name, offsets[name], arrived.put)
        except PError as exc:
            output.say(output.about_worker(name, f"{exc.message} (no more of its events)"))

    for name in links:
        threading.Thread(target=watch, args=(name,), daemon=True).start()
    while True:
        found = _read(client, wanted)
        deadline = time.monotonic() + FOLLOW_EVERY
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = arrived.get(timeout=left)
            except queue.Empty:
                break
            if _matches(event, wanted):
                found.append(event)
        _print(found, as_json)


def _print(found: list[Event], as_json: bool) -> None:
    for event in sorted(found, key=lambda event: event.time):
        if as_json:
            print(json.dumps(event.to_json(), separators=(",", ":")), flush=True)
        else:
            print(f"{clock(event.time)}  {(event.id or '-')[:8]:<8}  {event.worker or '-':<12}  "
                  f"{event.text():<24}  {event.source}", flush=True)
