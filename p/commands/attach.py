"""`p attach <id>`: back into a job's terminal, or, when the job ended with
nobody attached (its terminal closed), its output and how it ended."""

from __future__ import annotations

import subprocess
import sys
from shlex import quote

from p_protocol.states import State
from p_protocol.wire import Op

from .. import config, output, results
from .. import link as link_module
from ..errors import LINK_LOST, PError
from ..joblink import open_job, wait_for_start, waiting_line
from ..link import Link
from ..reconcile import query
from ..relink import Relink
from ..results import pull_results
from ..store import JobRecord, Store
from .logs import copy_log

# Runs the agent's attach command (its engine's: p never names it) with a
# terminal the worker knows: a local one it has no terminfo for (kitty,
# foot...) would make tmux refuse to attach, so fall back to a common one.
ATTACH_SH = 'infocmp "$TERM" >/dev/null 2>&1 || TERM=xterm-256color; export TERM; exec "$@"'
NOT_ATTACHED = 1  # the engine's status when the job's terminal is gone


def attach_session(link: Link, record: JobRecord, argv: list[str], ctrl_c_detaches: bool) -> int:
    """Attach the terminal with ``argv`` (from the agent); when it lets go,
    report like ssh would. When the link under it broke, reconnect (see
    relink.py) and attach again while the job runs (``ctrl_c_detaches`` as
    the first time)."""
    relink = Relink(link, what=f"attached to job {record.short_id}", resume_hint=f"`p attach {record.short_id}`")
    while True:
        remote = " ".join(["sh", "-c", quote(ATTACH_SH), "p-attach", *(quote(arg) for arg in argv)])
        code = subprocess.call(relink.link.transport.ssh_argv(remote, tty=True))
        # The link may have idled for hours while attached: connect afresh.
        relink.link.close()
        fresh = relink.reconnect() if code == LINK_LOST else link_module.connect(record.worker)
        relink.link = fresh
        try:
            record = query(fresh.agent, [record])[0]
            Store().save(record)
            if not record.finished:  # running, or still queued (Ctrl+C while it waited)
                if code == LINK_LOST:
                    again = fresh.agent.request(Op.ATTACH, id=record.id, ctrl_c_detaches=ctrl_c_detaches)["argv"]
                    if again is not None:
                        argv = again
                        continue
                keeps = "keeps running" if record.status == State.RUNNING.value else f"stays {record.status}"
                output.say(f"p: detached from job {record.short_id}; it {keeps} on {record.worker}. "
                           f"`p attach {record.short_id}` returns, `p logs {record.short_id}` shows its output")
                return 0
            if code in (NOT_ATTACHED, LINK_LOST):
                return show_ended(fresh, record, pull=True)  # nobody saw its end on this screen
            output.say(output.summary(record))
            # It ended while this terminal was on it: its results come back.
            return results.exit_status(record, pull_results(fresh, record))
        finally:
            fresh.close()


def show_ended(link: Link, record: JobRecord, pull: bool = False) -> int:
    """A job that ended with nobody looking: its output, then how it ended;
    with ``pull``, its `--pull` paths copied back (it ended while this `p`
    waited on it)."""
    copy_log(link, record.id, follow=False)
    output.say(output.summary(record))
    return results.exit_status(record, not pull or pull_results(link, record))


def attach(job: str, ctrl_c_detaches: bool) -> int:
    """``ctrl_c_detaches`` (or the config's `detach_on_ctrl_c`): Ctrl+C detaches."""
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    with open_job(job) as opened:
        ctrl_c_detaches = ctrl_c_detaches or config.load().detach_on_ctrl_c
        view = opened.view()
        if view is not None and view.get("position") is not None:  # in the worker's queue
            record = opened.save(view)
            if not terminal:
                raise PError(f"{waiting_line(record).removeprefix('p: ')}; attach needs a terminal, "
                             f"`p logs -f {record.short_id}` follows its output once it starts")
            # It attaches the moment the job starts.
            view, opened.link = wait_for_start(opened.link, record, stream=False)
        argv = None
        if view is not None and view["attachable"] and (view["state"] == State.RUNNING.value or terminal):
            argv = opened.link.agent.request(Op.ATTACH, id=opened.record.id,
                                             ctrl_c_detaches=ctrl_c_detaches)["argv"]
        if argv is None:
            record = opened.save(view)
            if view is None:
                raise PError(f"worker {record.worker} has no trace of job {record.short_id}")
            return show_ended(opened.link, record)
        record, link = opened.record, opened.link
    if not terminal:
        raise PError(f"attach needs a terminal; off one, `p logs -f {record.short_id}` follows the job's output")
    return attach_session(link, record, argv, ctrl_c_detaches)
