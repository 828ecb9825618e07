"""Which worker of a pool runs a job (`p @POOL -- cmd`), and what every
worker says of its slots, queue and GPUs (`p worker ls`).

All the pool's workers are asked at once (Op.INFO), over their warm masters
where there are some; a worker that has not answered within
``SURVEY_SECONDS`` is skipped with one line. Of those that take jobs (not
drained, GPUs enough), one with room now (a free slot, free GPUs, nobody
queued) is chosen, the least loaded first: used slots over slots, then the
load average over CPUs; when none has room, the one with the shortest
queue, where the job waits. Each worker's own queue (agent/p_agent/queue.py)
does the rest: this is no cluster scheduler.
"""

from __future__ import annotations

import threading
import time

from p_protocol.wire import Op

from . import link as link_module
from . import output
from .agent_client import AgentClient
from .config import ALL_POOL, Config, Worker
from .errors import PError
from .link import Link
from .ssh import Transport

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

# A warm master answers in milliseconds; a cold one costs a handshake and
# maybe an agent start. A worker slower than this is skipped.
SURVEY_SECONDS = 5.0


class Answer:
    """What one worker said (``info``, p_protocol.wire.INFO), or why not."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.info: dict[str, Any] | None = None
        self.problem: str | None = None
        self.link: Link | None = None

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None


def survey(config: Config, workers: list[Worker], seconds: float = SURVEY_SECONDS, *,
           keep_links: bool = False) -> list[Answer]:
    """Every worker's INFO, asked in parallel until the deadline; with
    ``keep_links``, the links stay open for the caller to use or close.
    A thread still waiting at the deadline is left to die with p."""
    answers = [Answer(worker) for worker in workers]
    lock = threading.Lock()
    done = False

    def ask(answer: Answer) -> None:
        try:
            transport = Transport(config, answer.worker)
            agent = _agent(transport)
            info = agent.request(Op.INFO)["worker"]
        except PError as exc:
            with lock:
                answer.problem = exc.message
            return
        with lock:
            if done:  # too late: nobody reads it
                agent.close()
                return
            answer.info = info
            answer.link = Link(transport, agent)
            if not keep_links:
                answer.close()

    threads = [threading.Thread(target=ask, args=(answer,), daemon=True) for answer in answers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        done = True
        for answer in answers:
            if answer.info is None and answer.problem is None:
                answer.problem = f"worker {answer.worker.name} did not answer within {seconds:g} s"
    return answers


def _agent(transport: Transport) -> AgentClient:
    try:
        agent = link_module.try_warm(transport, link_module.WARM_TIMEOUT)
    except PError:
        return link_module.connect_cold(transport, quiet=True)
    return agent or link_module.connect_cold(transport)


def place(config: Config, pool: str, gpus: int) -> Link:
    """A live link to the worker of ``pool`` that should run a job asking
    for ``gpus`` GPUs; the choice is printed."""
    answers = survey(config, config.pool(pool), keep_links=True)
    try:
        for answer in answers:
            if answer.problem is not None:
                output.say(output.about_worker(answer.worker.name, answer.problem) + "; skipped")
        chosen = choose([a for a in answers if a.info is not None], gpus, pool)
        link, info = chosen.link, chosen.info
        chosen.link = None  # the caller's now
    finally:
        for answer in answers:
            answer.close()
    assert link is not None and info is not None
    output.say(f"p: pool {pool}: placed on {link.worker.name} ({describe(info)})")
    return link


def choose(answers: list[Answer], gpus: int, pool: str) -> Answer:
    if not answers:
        raise PError(f"no worker of pool {pool} answered; check them with `p worker ls --check`")
    open_ones = [a for a in answers if not _info(a)["drained"]]
    if not open_ones:
        raise PError(f"every worker of pool {pool} that answered is drained; "
                     "`p worker resume NAME` lets one take jobs again")
    able = [a for a in open_ones if len(_info(a)["gpus"]) >= gpus]
    if not able:
        raise PError(f"no worker of pool {pool} that answered has {gpus} GPUs; declare them with "
                     "`p worker set NAME --gpus 0,1,...`")
    with_room = [a for a in able if _has_room(_info(a), gpus)]
    if with_room:
        return min(with_room, key=lambda a: (_used(_info(a)), _load(_info(a)), a.worker.name))
    return min(able, key=lambda a: (_info(a)["queued"], _used(_info(a)), _load(_info(a)), a.worker.name))


def _info(answer: Answer) -> dict[str, Any]:
    assert answer.info is not None
    return answer.info


def _has_room(info: dict[str, Any], gpus: int) -> bool:
    slots = info["slots"]
    return info["queued"] == 0 and (slots is None or info["running"] < slots) and len(info["gpus_free"]) >= gpus


def _used(info: dict[str, Any]) -> float:
    """Used slots over slots; a worker without a cap counts as empty, and its
    load average tells it apart."""
    return info["running"] / info["slots"] if info["slots"] else 0.0


def _load(info: dict[str, Any]) -> float:
    return info["load"] / max(1, info["cpus"])


def describe(info: dict[str, Any]) -> str:
    """A worker's state in a few words, as placement prints it."""
    slots = "no cap" if info["slots"] is None else str(info["slots"])
    parts = [f"{info['running']} running of {slots}", f"{info['queued']} queued"]
    if info["gpus"]:
        parts.append(f"{len(info['gpus_free'])} of {len(info['gpus'])} GPUs free")
    return ", ".join(parts) + f", load {info['load']:g}"


def pool_name(target: str | None) -> str | None:
    """``@POOL`` names a pool (``@all``: every worker); anything else is a worker."""
    if target is None or not target.startswith("@"):
        return None
    return target[1:] or ALL_POOL
