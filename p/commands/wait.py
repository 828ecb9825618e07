"""`p wait <id>`: block until a job ends; exit with its status."""

from __future__ import annotations

from p_protocol.wire import Op

from .. import output
from ..errors import PError
from ..joblink import open_job


def wait(job: str) -> int:
    with open_job(job) as opened:
        view = opened.link.agent.request(Op.WAIT, id=opened.record.id, blocking=True)["job"]
        record = opened.save(view)
    if view is None:
        raise PError(f"worker {record.worker} has no trace of job {record.short_id}", exit_code=255)
    output.say(output.summary(record))
    return output.exit_status(record)
