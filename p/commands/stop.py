"""`p stop <id>`: end a running job (its whole process group)."""

from __future__ import annotations

from p_protocol.states import State

from .. import output
from ..errors import PError
from ..joblink import open_job


def stop(job: str, grace: float) -> int:
    with open_job(job) as opened:
        was = opened.record.status
        # SIGTERM, then SIGKILL after `grace`: the reply may take that long.
        view = opened.link.agent.stop(opened.record.id, grace)
        record = opened.save(view)
    if view is None:
        raise PError(f"worker {record.worker} has no trace of job {record.short_id}")
    if record.status == State.STOPPED.value and was in (State.QUEUED.value, State.PENDING_APPROVAL.value):
        output.say(f"p: took job {record.short_id} out of {record.worker}'s queue; it never ran")
    elif record.status == State.STOPPED.value and was != State.STOPPED.value:
        output.say(f"p: stopped job {record.short_id} (exit {record.exit_code})")
    else:
        output.say(f"p: job {record.short_id} was not running ({output.status_text(record)})")
    return 0
