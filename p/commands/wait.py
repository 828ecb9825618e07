"""`p wait <id>`: block until a job ends; exit with its status."""

from __future__ import annotations

from p_protocol import Op

from .. import link as link_module
from .. import output
from ..errors import PError
from ..reconcile import apply
from ..store import Store


def wait(job: str) -> int:
    store = Store()
    record = store.find(job)
    link = link_module.connect(record.worker)
    try:
        view = link.agent.request(Op.WAIT, id=record.id, blocking=True)["job"]
    finally:
        link.close()
    record = apply(record, view)
    store.save(record)
    if view is None:
        raise PError(f"worker {record.worker} has no trace of job {record.short_id}", exit_code=255)
    output.say(output.summary(record))
    return output.exit_status(record)
