"""`p rm <id>` and `p rm --all`: job records and the jobs' files on their workers."""

from __future__ import annotations

from p_protocol.states import State
from p_protocol.wire import Op

from .. import config as config_module
from .. import link as link_module
from .. import output
from ..errors import PError
from ..link import Link
from ..store import JobRecord, Store


def rm(job: str | None, force: bool, keep_cache: bool = False, every: bool = False) -> int:
    store = Store()
    if every:
        if job is not None:
            raise PError("give a job id or --all, not both")
        return _remove_finished(store, keep_cache)
    if job is None:
        raise PError("which job? give its id (see `p ls`), or --all for every finished job")
    record = store.find(job)
    if not config_module.load().has_worker(record.worker):
        # Its worker was unregistered: only the local record is left to remove.
        store.delete(record.id)
        output.say(f"p: removed the record of job {record.short_id} (worker {record.worker} is gone)")
        return 0
    link = link_module.connect(record.worker)
    try:
        _remove(link, store, record, force, keep_cache)
    finally:
        link.close()
    output.say(f"p: removed job {record.short_id} and its files on {record.worker}")
    return 0


def _remove(link: Link, store: Store, record: JobRecord, force: bool, keep_cache: bool) -> None:
    view = link.agent.request(Op.STATUS, ids=[record.id])["jobs"].get(record.id)
    if view is not None and view["state"] == State.RUNNING.value and not force:
        raise PError(f"job {record.short_id} is running; stop it first (`p stop "
                     f"{record.short_id}`) or use `p rm --force`")
    # The spare copy of the job's directory goes with the directory's last job:
    # it holds everything that was synced from there.
    last = record.spare is not None and not keep_cache and not any(
        other.id != record.id and other.worker == record.worker and other.spare == record.spare
        for other in store.all())
    link.agent.request(Op.REMOVE, id=record.id, force=force, spare=record.spare if last else None,
                       blocking=True)
    store.delete(record.id)


def _remove_finished(store: Store, keep_cache: bool) -> int:
    config = config_module.load()
    by_worker: dict[str, list[JobRecord]] = {}
    for record in store.all():
        if record.finished:
            by_worker.setdefault(record.worker, []).append(record)
    removed, failed = 0, False
    for worker, records in by_worker.items():
        if not config.has_worker(worker):
            for record in records:
                store.delete(record.id)
            removed += len(records)
            continue
        try:
            link = link_module.connect(worker, config=config)
            try:
                for record in records:
                    _remove(link, store, record, False, keep_cache)
                    removed += 1
            finally:
                link.close()
        except PError as exc:
            output.say(output.about_worker(worker, exc.message))
            failed = True
    output.say(f"p: removed {removed} finished job(s) and their files")
    return 1 if failed else 0
