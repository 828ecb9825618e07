"""Bringing local job records in line with what the workers know.

`p ls` must be fast and spawn no ssh on its common path, so it asks only
workers whose SSH master is alive (a local socket round trip). Running jobs on
other workers are shown `unknown`; the next `p ls` (or `p ls --refresh` at
once) connects to those workers, all in parallel, one request each, and
shows what they said within a deadline (`LS_DEADLINE`): `p ls` never waits
on a worker.
"""

from __future__ import annotations

import math
import os
import time

from p_protocol.states import State
from p_protocol.wire import Op

from . import config as config_module
from . import link as link_module
from . import output
from .agent_client import AgentClient
from .errors import PError
from .fsutil import private_open
from .ssh import Transport
from .store import ACTIVE, UNKNOWN, JobRecord, Store

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

    # What one worker said: each job's view (None: no trace of it), or
    # nothing; and a problem to mention, if any.
    Answer = tuple[dict[str, Any] | None, str | None]


def apply(record: JobRecord, view: dict[str, Any] | None) -> JobRecord:
    """Update ``record`` from an agent's view of the job (None: no trace)."""
    record.checked_at = time.time()
    if view is None:
        record.status = State.LOST.value
        return record
    record.status = view["state"]
    record.exit_code = view.get("exit_code")
    record.reason = view.get("reason")
    if view.get("engine_id") is not None:
        record.engine_id, record.node_list = view["engine_id"], view.get("node_list")
    if view.get("rusage") is not None:
        record.rusage = view["rusage"]
    record.position = view.get("position")
    if view.get("gpu_ids"):
        record.gpu_ids = view["gpu_ids"]
    started, ended = view.get("started_at"), view.get("ended_at")
    took = float(ended) - float(started) if started is not None and ended is not None else None
    if took is not None and math.isfinite(took):  # two finite times may still be infinitely apart
        record.ended_at = record.started_at + max(0.0, took)
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


def _views(agent: AgentClient, records: list[JobRecord]) -> dict[str, Any]:
    reply = agent.request(Op.STATUS, ids=[record.id for record in records])
    return {record.id: (reply.get("jobs") or {}).get(record.id) for record in records}


# `p ls` answers from the local store and never waits on a worker: what the
# workers say within this many seconds is shown, the others' running jobs
# stay `unknown`. `--refresh` waits longer, because the user asked.
LS_DEADLINE = 0.75
REFRESH_DEADLINE = 15.0
# A worker found unreachable is not tried again by `p ls` for this long.
RETRY_UNREACHABLE_SECONDS = 60.0


def _recently_unreachable(transport: Transport) -> bool:
    try:
        return time.time() - os.path.getmtime(_unreachable_mark(transport)) < RETRY_UNREACHABLE_SECONDS
    except OSError:
        return False


def _unreachable_mark(transport: Transport) -> str:
    return os.path.join(transport.runtime, f"unreachable-{transport.key}")


def _mark_unreachable(transport: Transport) -> None:
    with private_open(_unreachable_mark(transport)):
        pass




def _ask(config: config_module.Config, worker_name: str, jobs: list[JobRecord], force: bool,
         deadline: float) -> Answer:
    try:
        transport = Transport(config, config.worker(worker_name))
    except PError as exc:
        return None, exc.message
    if not force and _recently_unreachable(transport):
        return None, (f"worker {worker_name} was unreachable a moment ago; its running jobs show `unknown` "
                      "(`p ls --refresh` tries now)")
    quiet = False
    try:
        agent = link_module.try_warm(transport, max(0.05, deadline - time.monotonic()))
    except PError:
        # A link that went quiet (suspend, a cut): going cold over it would
        # wait on ssh's keepalives. Leave it to `--refresh` or a minute later.
        if not force:
            _mark_unreachable(transport)
            return None, (f"worker {worker_name} does not answer; its running jobs show `unknown` "
                          "(`p ls --refresh` tries again now)")
        quiet, agent = True, None
    wanted = force or any(r.status == UNKNOWN for r in jobs)
    if agent is None and wanted:
        try:
            agent = link_module.connect_cold(transport, quiet=quiet)
            _forget(_unreachable_mark(transport))
        except PError as exc:
            _mark_unreachable(transport)
            return None, exc.message
    if agent is None:
        return None, None
    try:
        return _views(agent, jobs), None
    except PError as exc:
        return None, exc.message
    finally:
        agent.close()


def refresh_for_ls(store: Store, records: list[JobRecord], force: bool) -> None:
    """Ask the workers of active jobs, all at once, until a deadline; a
    worker that has not answered by then is one line, and its jobs show
    `unknown`. Its thread is left behind: it dies with this process (an
    ssh master it was starting comes up by itself, for the next command)."""
    pending = [r for r in records if r.status in ACTIVE]
    if not pending:
        return
    config = config_module.load()
    by_worker: dict[str, list[JobRecord]] = {}
    for record in pending:
        if config.has_worker(record.worker):
            by_worker.setdefault(record.worker, []).append(record)
    if not by_worker:
        return
    import threading

    seconds = REFRESH_DEADLINE if force else LS_DEADLINE
    deadline = time.monotonic() + seconds
    answers: dict[str, Answer] = {}
    threads = []
    for worker_name, jobs in by_worker.items():
        def one(worker_name: str = worker_name, jobs: list[JobRecord] = jobs) -> None:
            answers[worker_name] = _ask(config, worker_name, jobs, force, deadline)
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    changed = []
    problems = []
    for worker_name, jobs in by_worker.items():
        views, problem = answers.get(worker_name) or (
            None, f"worker {worker_name} did not answer within {seconds:g} s; its running jobs show `unknown`"
            + ("" if force else " (`p ls --refresh` waits longer)"))
        if views is not None:
            changed += [apply(record, views[record.id]) for record in jobs]
        else:
            changed += _unknown(jobs)
        if problem:
            problems.append(output.about_worker(worker_name, problem))
    if changed:
        store.save(*changed)
    for line in problems:
        output.say(line)
