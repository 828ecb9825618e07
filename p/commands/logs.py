"""`p logs <id> [-f]`: a job's captured output."""

from __future__ import annotations

import sys

from p_protocol import SHORT_ID_LEN

from ..joblink import open_job
from ..link import Link
from ..output import LogWriter
from ..relink import Relink


def copy_log(link: Link, job_id: str, follow: bool) -> Link:
    """The job's output on stdout: as the pane wrote it on a terminal, with
    plain newlines elsewhere. A link that breaks meanwhile is re-opened and
    the output resumed at the byte it stopped at; returns the link in use."""
    writer = LogWriter(sys.stdout.buffer, raw=sys.stdout.isatty())
    short = job_id[:SHORT_ID_LEN]
    relink = Relink(link, what=f"following job {short}", resume_hint=f"`p logs -f {short}`")

    def copy(link: Link) -> None:
        for chunk in link.agent.stream_log(job_id, writer.written, follow=follow):
            writer.write(chunk)

    relink.follow(copy)
    writer.finish()
    return relink.link


def logs(job: str, follow: bool) -> int:
    with open_job(job) as opened:
        opened.link = copy_log(opened.link, opened.record.id, follow)
        opened.save(opened.view())
    return 0
