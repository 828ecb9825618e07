"""`p logs <id> [-f]`: a job's captured output."""

from __future__ import annotations

import sys

from ..joblink import open_job
from ..link import Link
from ..output import LogWriter


def copy_log(link: Link, job_id: str, follow: bool) -> None:
    """The job's output on stdout: as the pane wrote it on a terminal, with
    plain newlines elsewhere."""
    writer = LogWriter(sys.stdout.buffer, raw=sys.stdout.isatty())
    for chunk in link.agent.stream_log(job_id, 0, follow=follow):
        writer.write(chunk)
    writer.finish()


def logs(job: str, follow: bool) -> int:
    with open_job(job) as opened:
        copy_log(opened.link, opened.record.id, follow)
        opened.save(opened.view())
    return 0
