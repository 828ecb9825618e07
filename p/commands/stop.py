"""`p stop <id>`: end a running job (its whole process group)."""

from __future__ import annotations

from p_protocol import Op, State

from .. import link as link_module
from .. import output
from ..errors import PError
from ..reconcile import apply
from ..store import Store


def stop(job: str, grace: float) -> int:
    store = Store()
    record = store.find(job)
    link = link_module.connect(record.worker)
    try:
        # SIGTERM, then SIGKILL after `grace`: the reply may take that long.
        view = link.agent.request(Op.STOP, id=record.id, grace=grace, blocking=True)["job"]
    finally:
        link.close()
    was = record.status
    record = apply(record, view)
    store.save(record)
    if view is None:
        raise PError(f"worker {record.worker} has no trace of job {record.short_id}")
    if record.status == State.STOPPED.value and was != State.STOPPED.value:
        output.say(f"p: stopped job {record.short_id} (exit {record.exit_code})")
    else:
        output.say(f"p: job {record.short_id} was not running ({output.status_text(record)})")
    return 0
