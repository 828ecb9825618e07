"""`p pull <id> <remote-path> [<local-dest>]`: artifacts from a job's workdir."""

from __future__ import annotations

import os
import posixpath

from p_protocol.wire import Op

from .. import output, sync
from ..errors import PError
from ..joblink import open_job


def checked_relative(path: str) -> str:
    """Paths are relative to the job's workdir and may not climb out of it;
    the agent checks again after resolving symlinks on the worker."""
    if not path or "\0" in path:
        raise PError("give a path inside the job's workdir, e.g. `p pull <id> build/app`")
    normal = posixpath.normpath(path)
    if posixpath.isabs(path) or normal == ".." or normal.startswith("../"):
        raise PError(f"{path!r} is outside the job's workdir; give a path relative to it")
    return normal


def pull(job: str, remote_path: str, local_dest: str | None) -> int:
    relative = checked_relative(remote_path)
    with open_job(job) as opened:
        record, link = opened.record, opened.link
        resolved = link.agent.request(Op.RESOLVE, id=record.id, path=relative)
    dest = local_dest or "."
    if resolved["is_dir"] and relative == ".":
        source = resolved["path"].rstrip("/") + "/"  # the whole workdir's contents
    else:
        source = resolved["path"]
    sync.pull(link.transport, source, dest)
    output.say(f"p: pulled {relative} from job {record.short_id} into {os.path.abspath(dest)}")
    return 0
