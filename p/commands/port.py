"""`p port ID REMOTE[:LOCAL] [--background]`, `p port --list`,
`p port --stop [LOCAL|ID]`: a port of a job's worker on localhost."""

from __future__ import annotations

import sys

from .. import ports
from ..errors import PError
from ..table import render


def port(job: str | None, mapping: str | None, background: bool, show_list: bool, stop: bool) -> int:
    if show_list:
        return _list()
    if stop:
        return _stop(job)
    if job is None or mapping is None:
        raise PError("usage: p port ID REMOTE[:LOCAL] [--background], p port --list, p port --stop [LOCAL|ID]",
                     exit_code=2)
    remote, local = ports.parse_mapping(mapping)
    if not background:
        return ports.hold(job, remote, local, announce=False)
    forward = ports.start_background(job, remote, local)
    print(forward.url)
    ports.say_started(forward)
    return 0


def _list() -> int:
    rows = [[str(f.local), str(f.remote), f.job[:8], f.worker, f.url] for f in ports.forwards()]
    if rows:
        print(render(["LOCAL", "REMOTE", "JOB", "WORKER", "URL"], rows))
    return 0


def _stop(target: str | None) -> int:
    """Every forward, or those of one local port or one job (an id prefix)."""
    live = ports.forwards()
    chosen = live if target is None else [f for f in live if str(f.local) == target]
    if target is not None and not chosen:
        chosen = [f for f in live if f.job.startswith(target.lower())]
    if target is not None and not chosen:
        raise PError(f"no port forward of {target!r}; see `p port --list`")
    for forward in chosen:
        ports.stop(forward)
        print(f"p: stopped forwarding localhost:{forward.local} (port {forward.remote} of job {forward.job[:8]})",
              file=sys.stderr)
    return 0
