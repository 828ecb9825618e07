"""Approving or rejecting jobs that wait for it (`p approve`, `p reject`):
the approval gate of a worker set with `--require-approval`.

Any client of the user may decide, also one that did not send the job: an
id this client has no record of is looked for among the jobs pending on
every registered worker (Op.INFO lists them).
"""

from __future__ import annotations

from p_protocol import SHORT_ID_LEN
from p_protocol.states import State
from p_protocol.wire import Op

from . import config as config_module
from . import link as link_module
from . import output
from .errors import PError
from .placement import survey
from .reconcile import apply
from .store import ID_PREFIX_RE, Store


def pending() -> list[tuple[str, str]]:
    """(worker, job id) of every job pending approval on a worker that answers."""
    config = config_module.load()
    found = []
    for answer in survey(config, config.workers):
        if answer.problem is not None:
            output.say(output.about_worker(answer.worker.name, answer.problem))
        elif answer.info is not None:
            found += [(answer.worker.name, job_id) for job_id in answer.info["pending"]]
    return found


def list_pending() -> int:
    jobs = pending()
    if not jobs:
        output.say("p: no job waits for approval")
        return 0
    for worker, job_id in jobs:
        print(f"{job_id[:SHORT_ID_LEN]}  {worker}")
    return 0


def decide(prefix: str, approved: bool) -> int:
    store = Store()
    wanted = prefix.strip().lower()
    try:
        record = store.find(prefix)
        worker, job_id = record.worker, record.id
    except PError:
        if not ID_PREFIX_RE.match(wanted):
            raise
        # Sent by another client: look among the jobs the workers hold.
        matches = [(w, j) for w, j in pending() if j.startswith(wanted)]
        if len(matches) != 1:
            raise PError(f"no job pending approval matches {prefix!r}" if not matches else
                         f"job id {prefix!r} is ambiguous; type more characters") from None
        (worker, job_id), record = matches[0], None
    link = link_module.connect(worker)
    try:
        view = link.agent.request(Op.APPROVE if approved else Op.REJECT, id=job_id)["job"]
    finally:
        link.close()
    if view is None:
        raise PError(f"worker {worker} has no trace of job {job_id[:SHORT_ID_LEN]}")
    if record is not None:
        store.save(apply(record, view))
    short = job_id[:SHORT_ID_LEN]
    if not approved:
        output.say(f"p: rejected job {short} on {worker}; it did not run")
    elif view["state"] == State.RUNNING.value:
        output.say(f"p: approved job {short}; it runs on {worker}")
    else:
        output.say(f"p: approved job {short}; it is {view['state']} on {worker}"
                   + (f", position {view['position']}" if view.get("position") else ""))
    return 0
