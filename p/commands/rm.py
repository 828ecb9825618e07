"""`p rm <id>`: the job's record, its directory and its workdir."""

from __future__ import annotations

from p_protocol import Op, State

from .. import config as config_module
from .. import link as link_module
from .. import output
from ..errors import PError
from ..store import Store


def rm(job: str, force: bool) -> int:
    store = Store()
    record = store.find(job)
    if not config_module.load().has_worker(record.worker):
        # Its worker was unregistered: only the local record is left to remove.
        store.delete(record.id)
        output.say(f"p: removed the record of job {record.short_id} (worker {record.worker} is gone)")
        return 0
    link = link_module.connect(record.worker)
    try:
        view = link.agent.request(Op.STATUS, ids=[record.id])["jobs"].get(record.id)
        if view is not None and view["state"] == State.RUNNING.value and not force:
            raise PError(f"job {record.short_id} is running; stop it first (`p stop "
                         f"{record.short_id}`) or use `p rm --force`")
        link.agent.request(Op.REMOVE, id=record.id, force=force, blocking=True)
    finally:
        link.close()
    store.delete(record.id)
    output.say(f"p: removed job {record.short_id} and its files on {record.worker}")
    return 0
