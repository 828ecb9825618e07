"""`p attach <id>`: back into a running job's tmux session."""

from __future__ import annotations

import subprocess
import sys
from shlex import quote

from p_protocol import Op, State, session_name

from .. import link as link_module
from .. import output
from ..errors import PError
from ..link import Link
from ..reconcile import apply, query
from ..store import JobRecord, Store


def attach_session(link: Link, record: JobRecord) -> int:
    """Attach the terminal; when tmux lets go, report like ssh would."""
    # A local terminal the worker has no terminfo for (kitty, foot...) would
    # make tmux refuse to attach: fall back to a common one there.
    script = ('infocmp "$TERM" >/dev/null 2>&1 || TERM=xterm-256color; export TERM; '
              'exec tmux -S "$0" attach-session -t "$1"')
    remote = f"sh -c {quote(script)} {quote(link.layout.tmux_socket)} {quote('=' + session_name(record.id))}"
    code = subprocess.call(link.transport.ssh_argv(remote, tty=True))
    # The link may have idled for hours while attached: connect afresh.
    fresh = link_module.connect(record.worker)
    try:
        record = query(fresh.agent, [record])[0]
        Store().save(record)
    finally:
        fresh.close()
    if record.status == State.RUNNING.value:
        if code not in (0, 1):
            raise PError(f"the SSH link to {record.worker} dropped; the job keeps running: "
                         f"`p attach {record.short_id}` to return")
        output.say(f"p: detached from job {record.short_id}; it keeps running on {record.worker}. "
                   f"`p attach {record.short_id}` returns, `p logs {record.short_id}` shows its output")
        return 0
    output.say(output.summary(record))
    return output.exit_status(record)


def attach(job: str) -> int:
    store = Store()
    record = store.find(job)
    link = link_module.connect(record.worker)
    try:
        view = link.agent.request(Op.STATUS, ids=[record.id])["jobs"].get(record.id)
    finally:
        link.close()
    if view is None or not view["session_open"]:
        store.save(apply(record, view))
        if view is None:
            raise PError(f"worker {record.worker} has no trace of job {record.short_id}")
        raise PError(f"job {record.short_id} has finished ({output.status_text(record)}) and its "
                     f"session is closed; read its output with `p logs {record.short_id}`")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise PError(f"attach needs a terminal; off one, `p logs -f {record.short_id}` follows the job's output")
    return attach_session(link, record)
