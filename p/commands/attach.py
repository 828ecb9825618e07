"""`p attach <id>`: back into a job's tmux session, or, when the job ended with
nobody attached (its session closed), its output and how it ended."""

from __future__ import annotations

import subprocess
import sys
from shlex import quote

from p_protocol import Op, State, session_name

from .. import link as link_module
from .. import output
from ..errors import LINK_LOST, PError
from ..link import Link
from ..reconcile import apply, query
from ..store import JobRecord, Store
from .logs import copy_log

# A local terminal the worker has no terminfo for (kitty, foot...) would make
# tmux refuse to attach: fall back to a common one there. A session that is
# gone (its job ended with nobody attached) exits 1 without tmux's complaint.
ATTACH_SH = ('infocmp "$TERM" >/dev/null 2>&1 || TERM=xterm-256color; export TERM; '
             'tmux -S "$0" has-session -t "$1" 2>/dev/null || exit 1; '
             'exec tmux -S "$0" attach-session -t "$1"')
NOT_ATTACHED = 1  # also tmux's own status when it cannot attach


def attach_session(link: Link, record: JobRecord) -> int:
    """Attach the terminal; when tmux lets go, report like ssh would."""
    remote = f"sh -c {quote(ATTACH_SH)} {quote(link.layout.tmux_socket)} {quote('=' + session_name(record.id))}"
    code = subprocess.call(link.transport.ssh_argv(remote, tty=True))
    # The link may have idled for hours while attached: connect afresh.
    fresh = link_module.connect(record.worker)
    try:
        record = query(fresh.agent, [record])[0]
        Store().save(record)
        if record.status == State.RUNNING.value:
            if code not in (0, NOT_ATTACHED):
                raise PError(f"the SSH link to {record.worker} dropped; the job keeps running: "
                             f"`p attach {record.short_id}` to return", exit_code=LINK_LOST)
            output.say(f"p: detached from job {record.short_id}; it keeps running on {record.worker}. "
                       f"`p attach {record.short_id}` returns, `p logs {record.short_id}` shows its output")
            return 0
        if code == NOT_ATTACHED:
            return show_ended(fresh, record)  # nobody saw its screen
    finally:
        fresh.close()
    output.say(output.summary(record))
    return output.exit_status(record)


def show_ended(link: Link, record: JobRecord) -> int:
    """A job that ended with nobody looking: its output, then how it ended."""
    copy_log(link, record.id, follow=False)
    output.say(output.summary(record))
    return output.exit_status(record)


def attach(job: str) -> int:
    store = Store()
    record = store.find(job)
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    link = link_module.connect(record.worker)
    try:
        view = link.agent.request(Op.STATUS, ids=[record.id])["jobs"].get(record.id)
        if view is None or not view["session_open"] or (view["state"] != State.RUNNING.value and not terminal):
            record = apply(record, view)
            store.save(record)
            if view is None:
                raise PError(f"worker {record.worker} has no trace of job {record.short_id}")
            return show_ended(link, record)
    finally:
        link.close()
    if not terminal:
        raise PError(f"attach needs a terminal; off one, `p logs -f {record.short_id}` follows the job's output")
    return attach_session(link, record)
