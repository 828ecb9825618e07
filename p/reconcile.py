"""Bringing local job records in line with what the workers know.

`p ls` must be fast and spawn no ssh on its common path, so it asks only
workers whose SSH master is alive (a local socket round trip). Running jobs on
other workers are shown `unknown`; the next `p ls` (or `p ls --refresh` at
once) connects to those workers, all in parallel, one request each.
"""

from __future__ import annotations

import os
import time

from p_protocol.states import State
from p_protocol.wire import Op

from . import config as config_module
from . import link as link_module
from . import output
from .agent_client import AgentClient
from .errors import PError
from .ssh import Transport
from .store import ACTIVE, UNKNOWN, JobRecord, Store

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any


def apply(record: JobRecord, view: dict[str, Any] | None) -> JobRecord:
    """Update ``record`` from an agent's view of the job (None: no trace)."""
    record.checked_at = time.time()
    if view is None:
        record.status = State.LOST.value
        return record
    record.status = view["state"]
    record.exit_code = view.get("exit_code")
    started, ended = view.get("started_at"), view.get("ended_at")
    if started is not None and ended is not None:
        record.ended_at = record.started_at + max(0.0, float(ended) - float(started))
    elif record.finished and record.ended_at is None:
        record.ended_at = record.checked_at
    return record


def _unknown(records: list[JobRecord]) -> list[JobRecord]:
    for record in records:
        record.status = UNKNOWN
    return records


def _forget(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def query(agent: AgentClient, records: list[JobRecord]) -> list[JobRecord]:
    reply = agent.request(Op.STATUS, ids=[record.id for record in records])
    views = reply.get("jobs") or {}
    return [apply(record, views.get(record.id)) for record in records]


# `p ls` must not hang on a link that went quiet (suspend, Wi-Fi change)...
LS_TIMEOUT = 2.0
# ...nor try a worker that was just found unreachable on every call.
RETRY_UNREACHABLE_SECONDS = 60.0


def _recently_unreachable(transport: Transport) -> bool:
    try:
        return time.time() - os.path.getmtime(_unreachable_mark(transport)) < RETRY_UNREACHABLE_SECONDS
    except OSError:
        return False


def _unreachable_mark(transport: Transport) -> str:
    return os.path.join(transport.runtime, f"unreachable-{transport.key}")


def refresh_for_ls(store: Store, records: list[JobRecord], force: bool) -> None:
    pending = [r for r in records if r.status in ACTIVE]
    if not pending:
        return
    config = config_module.load()
    by_worker: dict[str, list[JobRecord]] = {}
    for record in pending:
        by_worker.setdefault(record.worker, []).append(record)

    def one(worker_name: str) -> tuple[list[JobRecord], str | None]:
        jobs = by_worker[worker_name]
        if not config.has_worker(worker_name):
            return [], None
        try:
            transport = Transport(config, config.worker(worker_name))
        except PError as exc:
            return _unknown(jobs), exc.message
        try:
            agent = link_module.try_warm(transport, LS_TIMEOUT)
        except PError:
            agent = None  # a link that does not answer at once counts as absent
        wanted = force or any(r.status == UNKNOWN for r in jobs)
        if agent is None and wanted and (force or not _recently_unreachable(transport)):
            try:
                agent = link_module.connect_cold(transport)
                _forget(_unreachable_mark(transport))
            except PError as exc:
                with open(_unreachable_mark(transport), "w"):
                    pass
                return _unknown(jobs), exc.message
        if agent is None:
            return _unknown(jobs), None
        try:
            return query(agent, jobs), None
        except PError as exc:
            return _unknown(jobs), exc.message
        finally:
            agent.close()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(32, len(by_worker))) as pool:
        results = list(pool.map(one, by_worker))
    changed = [record for updated, _ in results for record in updated]
    if changed:
        store.save(*changed)
    for worker_name, (_, problem) in zip(by_worker, results):
        if problem:
            output.say(output.about_worker(worker_name, problem))
