"""A live link to a worker's agent: the one way commands reach a worker.

Warm path: the forwarded socket of this worker's SSH master already exists,
so a command connects to a local unix socket and pays no ssh process at all.
Cold path: start the master, probe the worker, install or start the agent if
needed, forward the socket, connect: once per ControlPersist window.
"""

from __future__ import annotations

import os
import time

from p_protocol import VERSION
from p_protocol.layout import Layout

from . import config as config_module
from .agent_client import AgentClient, AgentGone
from .config import Config, Worker
from .errors import PError
from .fsutil import locked
from .ssh import Transport

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import IO

    from .provision import WorkerFacts


# A warm hello is a local round trip plus one over the link: seconds mean dead.
WARM_TIMEOUT = 5.0
# A master found mute, asked once more under the cold lock: a fresh one
# answers in milliseconds.
QUIET_RECHECK = 1.0


class Link:
    def __init__(self, transport: Transport, agent: AgentClient) -> None:
        self.transport = transport
        self.agent = agent
        self.layout = Layout(os.path.join(agent.home, ".p"))

    @property
    def worker(self) -> Worker:
        return self.transport.worker

    def close(self) -> None:
        self.agent.close()


def local_socket(transport: Transport) -> str:
    return os.path.join(transport.runtime, f"agent-{transport.key}.sock")


def try_warm(transport: Transport, timeout: float) -> AgentClient | None:
    path = local_socket(transport)
    if not os.path.exists(path):
        return None
    try:
        return AgentClient(path, transport.worker.name, timeout)
    except AgentGone:
        return None


def _socket_exists(transport: Transport, path: str) -> bool:
    import shlex

    try:
        return transport.run_script(f"test -S {shlex.quote(path)} && echo yes\n", timeout=10).strip() == "yes"
    except PError:
        return False


def connect(worker_name: str | None = None, *, config: Config | None = None) -> Link:
    config = config or config_module.load()
    worker = config.worker(worker_name)
    transport = Transport(config, worker)
    quiet = False
    try:
        agent = try_warm(transport, WARM_TIMEOUT)
    except PError:
        # The master answers nothing (a suspended laptop, a changed network):
        # connect afresh rather than wait for its keepalives.
        quiet, agent = True, None
    if agent is None:
        agent = connect_cold(transport, quiet=quiet)
    return Link(transport, agent)


def _cold_lock(transport: Transport) -> IO[str]:
    """One cold path per worker at a time: fifty `p` started at once would
    otherwise start fifty masters (leaked, each an sshd session for
    ControlPersist) and open fifty connections at once, past sshd's
    MaxStartups. The others wait here, then find the link warm."""
    return locked(os.path.join(transport.runtime, f"cold-{transport.key}.lock"))


def connect_cold(transport: Transport, facts: WorkerFacts | None = None, *, quiet: bool = False) -> AgentClient:
    """``quiet``: the caller found the master mute. It is put aside here,
    under the lock, and only if it is still mute: another `p` may have
    replaced it meanwhile."""
    with _cold_lock(transport):
        if facts is None:
            # Whoever held the lock before may have made the link warm.
            try:
                agent = try_warm(transport, QUIET_RECHECK if quiet else WARM_TIMEOUT)
            except PError:
                # Mute: put it aside, never `-O exit` it, for the sessions it
                # carries (another terminal's `p logs -f`) may ride out the
                # cut that muted it.
                transport.retire_master()
                agent = None
            if agent is not None:
                return agent
        return _connect_cold_locked(transport, facts)


def _agent_socket(facts: WorkerFacts) -> str:
    return Layout(os.path.join(facts.home, ".p")).agent_socket(VERSION)


def _start_remembered(transport: Transport, local: str) -> WorkerFacts | None:
    """Start the agent from what the last probe found, forwarded to
    ``local``; None when nothing is remembered or it no longer holds (then
    it is forgotten)."""
    from . import provision

    facts = provision.remembered_facts(transport)
    if facts is None:
        return None
    try:
        provision.ensure_agent(transport, facts, remembered=True, forward=(local, _agent_socket(facts)))
    except provision.StaleFacts:
        provision.forget_facts(transport)
        return None
    return facts


def _connect_cold_locked(transport: Transport, facts: WorkerFacts | None, *, recall: bool = True) -> AgentClient:
    """``recall``: start from the facts an earlier probe remembered, if any
    (no probe: one round trip fewer); they are checked as the agent starts,
    and a link they mislead is made again from a probe."""
    from . import provision

    path = local_socket(transport)
    # The first script starts the master if none is up (see run_script).
    remembered = _start_remembered(transport, path) if facts is None and recall else None
    if remembered is not None:
        facts = remembered
        remote = _agent_socket(facts)
    else:
        if facts is None:
            facts = provision.probe(transport)
        remote = _agent_socket(facts)
        artifact = provision.ensure_agent(transport, facts, forward=(path, remote))
        provision.remember_facts(transport, facts, artifact)
    for attempt in range(2):
        for _ in range(20):
            try:
                return AgentClient(path, transport.worker.name)
            except AgentGone:
                time.sleep(0.1)
        if remembered is not None:
            # Perhaps no agent of ours where the remembered home said: ask.
            provision.forget_facts(transport)
            return _connect_cold_locked(transport, None, recall=False)
        if attempt == 0:
            # Its pid file said "running" but nothing answered: start afresh.
            provision.ensure_agent(transport, provision.probe(transport), restart=True)
    if transport.master_saw("open failed") and _socket_exists(transport, remote):
        # Both seen: the agent listens there, and the worker's sshd would not
        # connect the master's channel to it.
        raise PError(f"worker {transport.worker.name}'s sshd refuses to connect the agent's socket, "
                     f"which exists there ({remote}); its sshd_config must allow AllowStreamLocalForwarding")
    raise PError(f"the agent on worker {transport.worker.name} does not answer; "
                 f"see ~/.p/run/agent.log on the worker")
