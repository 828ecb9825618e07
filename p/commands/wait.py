"""`p wait [--pull PATH]... <id>`: block until a job ends; copy its results
back; exit with its status."""

from __future__ import annotations

from .. import output
from ..errors import PError
from ..joblink import open_job
from ..relink import Relink
from ..results import checked_relative, exit_status, pull_results


def wait(job: str, pull: list[str] | None = None) -> int:
    extra = [checked_relative(path) for path in pull or []]  # before waiting, maybe for hours
    with open_job(job) as opened:
        short = opened.record.short_id
        relink = Relink(opened.link, what=f"waiting for job {short}", resume_hint=f"`p wait {short}`")
        view = relink.follow(lambda link: link.agent.wait(opened.record.id))
        opened.link = relink.link
        record = opened.save(view)
        if view is None:
            raise PError(f"worker {record.worker} has no trace of job {record.short_id}", exit_code=255)
        output.say(output.summary(record))
        pulled = pull_results(opened.link, record, extra)
    return exit_status(record, pulled)
