"""`p logs <id> [-f]`: a job's captured output."""

from __future__ import annotations

import sys

from p_protocol import Op

from .. import link as link_module
from ..link import Link
from ..output import LogWriter
from ..reconcile import apply
from ..store import Store


def copy_log(link: Link, job_id: str, follow: bool) -> None:
    """The job's output on stdout: as the pane wrote it on a terminal, with
    plain newlines elsewhere."""
    writer = LogWriter(sys.stdout.buffer, raw=sys.stdout.isatty())
    for chunk in link.agent.stream_log(job_id, 0, follow=follow):
        writer.write(chunk)
    writer.finish()


def logs(job: str, follow: bool) -> int:
    store = Store()
    record = store.find(job)
    link = link_module.connect(record.worker)
    try:
        copy_log(link, record.id, follow)
        view = link.agent.request(Op.STATUS, ids=[record.id])["jobs"].get(record.id)
        store.save(apply(record, view))
    finally:
        link.close()
    return 0
