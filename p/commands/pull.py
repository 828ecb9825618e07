"""`p pull <id> <remote-path> [<local-dest>]`: artifacts from a job's workdir."""

from __future__ import annotations

import os

from .. import output
from ..joblink import open_job
from ..results import checked_relative, fetch


def pull(job: str, remote_path: str, local_dest: str | None) -> int:
    relative = checked_relative(remote_path)
    dest = local_dest or "."
    with open_job(job) as opened:
        fetch(opened.link, opened.record, relative, dest)
        record = opened.record
    output.say(f"p: pulled {relative} from job {record.short_id} into {os.path.abspath(dest)}")
    return 0
