"""The opening every job verb shares: the job a prefix names, its record,
and a live link to its worker, closed when the verb is done."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from p_protocol.states import State
from p_protocol.wire import Op

from . import link as link_module
from . import output
from .errors import PError
from .link import Link
from .reconcile import apply
from .store import JobRecord, Store

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any


class JobLink:
    def __init__(self, store: Store, record: JobRecord, link: Link) -> None:
        self.store = store
        self.record = record
        self.link = link

    def view(self) -> dict[str, Any] | None:
        """What the worker says of the job now (None: no trace of it)."""
        return self.link.agent.request(Op.STATUS, ids=[self.record.id])["jobs"].get(self.record.id)

    def save(self, view: dict[str, Any] | None) -> JobRecord:
        """Bring the record in line with ``view`` and store it."""
        self.record = apply(self.record, view)
        self.store.save(self.record)
        return self.record


@contextmanager
def open_job(prefix: str) -> Iterator[JobLink]:
    store = Store()
    record = store.find(prefix)
    opened = JobLink(store, record, link_module.connect(record.worker))
    try:
        yield opened
    finally:
        opened.link.close()  # the verb may have re-opened it (relink.py)


def waiting_line(record: JobRecord) -> str:
    """Where a job that has not started waits, in one line."""
    if record.status == State.PENDING_APPROVAL.value:
        return (f"p: job {record.short_id} waits for approval on {record.worker}, position {record.position}; "
                f"`p approve {record.short_id}` lets it run")
    return f"p: queued on {record.worker}, position {record.position}"


def wait_for_start(link: Link, record: JobRecord, *, stream: bool) -> tuple[dict[str, Any] | None, Link]:
    """Say where the job waits; unless its output is about to be streamed
    (which waits by itself), block until it leaves the queue, riding out a
    link that breaks meanwhile (relink.py): what the worker says of it
    then, and the link to use from now on."""
    output.say(waiting_line(record))
    if stream:
        return None, link
    from .relink import Relink

    relink = Relink(link, what=f"waiting for job {record.short_id} to start",
                    resume_hint=f"`p attach {record.short_id}`")
    try:
        return relink.follow(lambda now: now.agent.wait_start(record.id)), relink.link
    except KeyboardInterrupt:
        raise PError(f"left job {record.short_id} waiting on {record.worker}; `p attach {record.short_id}` "
                     f"waits for it again, `p stop {record.short_id}` takes it out of the queue",
                     exit_code=130) from None
