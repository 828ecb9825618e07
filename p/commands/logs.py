"""`p logs <id> [-f]`: a job's captured output."""

from __future__ import annotations

import sys

from p_protocol import Op

from .. import link as link_module
from ..output import LogWriter
from ..reconcile import apply
from ..store import Store


def logs(job: str, follow: bool) -> int:
    store = Store()
    record = store.find(job)
    link = link_module.connect(record.worker)
    try:
        writer = LogWriter(sys.stdout.buffer, raw=sys.stdout.isatty())
        for chunk in link.agent.stream_log(record.id, 0, follow=follow):
            writer.write(chunk)
        writer.finish()
        view = link.agent.request(Op.STATUS, ids=[record.id])["jobs"].get(record.id)
        store.save(apply(record, view))
    finally:
        link.close()
    return 0
