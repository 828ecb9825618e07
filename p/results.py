"""Files copied back from a job's workdir: `p pull`, and a job's `--pull`
paths once `p` sees it end (streaming, attached, or `p wait`).

Paths are untrusted both ways: one from the command line is refused here if
it climbs out of the workdir, and the agent's `resolve` refuses it again
after resolving symlinks on the worker; what comes back goes through rsync,
whose receiver refuses names that climb out of the destination.
"""

from __future__ import annotations

import os
import posixpath

from p_protocol.states import State
from p_protocol.wire import Op

from . import output
from .errors import PError
from .link import Link
from .store import JobRecord


def checked_relative(path: str) -> str:
    """Paths are relative to the job's workdir and may not climb out of it;
    the agent checks again after resolving symlinks on the worker."""
    if not path or "\0" in path:
        raise PError("give a path inside the job's workdir, e.g. `p pull <id> build/app`")
    normal = posixpath.normpath(path)
    if posixpath.isabs(path) or normal == ".." or normal.startswith("../"):
        raise PError(f"{path!r} is outside the job's workdir; give a path relative to it")
    return normal


def fetch(link: Link, record: JobRecord, relative: str, dest: str) -> None:
    """Copy ``relative`` (checked) from the job's workdir into ``dest``."""
    resolved = link.agent.request(Op.RESOLVE, id=record.id, path=relative)
    if resolved["is_dir"] and relative == ".":
        source = resolved["path"].rstrip("/") + "/"  # the whole workdir's contents
    else:
        source = resolved["path"]
    from . import sync  # here: a job with nothing to pull needs no rsync (startup)

    sync.pull(link.transport, source, dest)


def pull_results(link: Link, record: JobRecord, extra: list[str] | None = None) -> bool:
    """The job's `--pull` paths (and ``extra`` ones) copied into the current
    directory, each at its path there (`--pull out/log` lands in ./out/log);
    a path that cannot be copied is one line. False if any could not."""
    if record.status == State.LOST.value:
        return True  # nothing to copy: its worker no longer holds it as it ended
    every = list(dict.fromkeys([*record.spec.pull, *(extra or [])]))
    pulled = True
    for relative in every:
        dest = posixpath.dirname(relative) or "."
        try:
            os.makedirs(dest, exist_ok=True)
            fetch(link, record, relative, dest)
        except PError as exc:
            output.say(f"p: --pull {relative}: {exc.message.removeprefix(f'worker {record.worker}: ')}")
            pulled = False
        except OSError as exc:
            output.say(f"p: --pull {relative}: cannot create {os.path.abspath(dest)}: {exc.strerror}")
            pulled = False
        else:
            output.say(f"p: pulled {relative} from job {record.short_id} into {os.path.abspath(relative)}")
    return pulled


def exit_status(record: JobRecord, pulled: bool) -> int:
    """The job's exit status; a job that succeeded but whose results could
    not all be copied back is a failure too (1), so `p --pull X -- make &&
    use X` never goes on without X."""
    code = output.exit_status(record)
    return 1 if code == 0 and not pulled else code
