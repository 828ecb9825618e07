"""`p worker register|ls|set|rm|clean|default`: the registered workers."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

from p_protocol import ENGINES, VERSION, WORKER_NAME_RE
from p_protocol.jobspec import SLURM_NAME_RE, sbatch_arg_problem
from p_protocol.wire import Op

from .. import config as config_module
from .. import link as link_module
from .. import output, provision
from ..config import Config, Worker
from ..errors import PError
from ..ssh import Transport, host_of, split_connection
from ..store import Store
from ..table import render, size
from ..verbs import VERBS

CHECK_TIMEOUT = 20.0


def register(connection: str, name: str | None, ssh_config: str | None, make_default: bool,
             scratch: str | None = None, slurm: Worker | None = None) -> int:
    """``slurm``: a Slurm login node, with the settings of its jobs (a
    Worker with only those set)."""
    split_connection(connection)  # refuses what is not an SSH target
    name = name or host_of(connection)
    if not WORKER_NAME_RE.match(name):
        raise PError(f"{name!r} cannot name a worker (letters, digits, '.', '_', '-'); choose one with -n")
    if name in VERBS:
        raise PError(f"{name!r} is a p command, so `p {name} -- cmd` could not reach it; choose a name with -n")
    config = config_module.load()
    if config.has_worker(name):
        raise PError(f"a worker named {name!r} exists already; remove it first (`p worker rm {name}`) "
                     "or choose another name with -n")
    if ssh_config is not None:
        ssh_config = os.path.abspath(os.path.expanduser(ssh_config))
        if not os.path.isfile(ssh_config):
            raise PError(f"ssh config file {ssh_config} does not exist")
    worker = Worker(name, connection, ssh_config)
    if slurm is not None:
        _slurm_settings(slurm)
        worker = Worker(name, connection, ssh_config, engine="slurm", partition=slurm.partition,
                        account=slurm.account, sbatch_args=slurm.sbatch_args)
    config.workers.append(worker)
    transport = Transport(config, worker)
    transport.ensure_master()
    facts = provision.probe(transport)
    if slurm is not None and facts.missing_slurm:
        raise PError(f"{connection} lacks {', '.join(facts.missing_slurm)} on PATH, so it is no Slurm login "
                     "node for p; install Slurm's client there, or make its login shell find them")
    agent = link_module.connect_cold(transport, facts)
    try:
        if agent.engine != (worker.engine or "tmux"):
            raise PError(f"{connection} already serves p with {agent.engine} jobs (one engine per login); "
                         f"register it with another user, or `p worker rm` the worker that uses it")
        if scratch is not None:
            placed = agent.request(Op.SCRATCH, path=scratch, blocking=True)
    finally:
        agent.close()
    if make_default or config.default_worker is None or not config.has_worker(config.default_worker):
        config.default_worker = name
    config_module.save(config)
    default = " (default)" if config.default_worker == name else ""
    output.say(f"p: registered worker {name}{default}: {connection}, {facts.system} {facts.machine}, "
               f"p-agent {VERSION}")
    if scratch is not None:
        _say_scratch(name, placed)
    return 0


def _slurm_settings(slurm: Worker) -> None:
    """The settings `register --slurm` got, checked as the config checks them."""
    for key, value in (("partition", slurm.partition), ("account", slurm.account)):
        if value is not None and not SLURM_NAME_RE.match(value):
            raise PError(f"--{key} {value!r} is not a Slurm {key} name", exit_code=2)
    for arg in slurm.sbatch_args:
        problem = sbatch_arg_problem(arg)
        if problem:
            raise PError(f"--sbatch-arg: {problem}", exit_code=2)


def set_(name: str, scratch: str | None) -> int:
    """Change a worker's settings kept on the worker itself: its scratch space."""
    if scratch is None:
        raise PError(f"nothing to set for worker {name}; see `p worker set --help`")
    link = link_module.connect(name)
    try:
        placed = link.agent.request(Op.SCRATCH, path=scratch, blocking=True)
    finally:
        link.close()
    _say_scratch(name, placed)
    return 0


def _say_scratch(name: str, placed: dict[str, object]) -> None:
    output.say(f"p: worker {name} keeps workdirs and spare copies in {placed['path']} "
               f"({size(int(str(placed['free'])))} free)")


def ls(check: bool, as_json: bool = False) -> int:
    config = config_module.load()
    if not config.workers and not as_json:
        output.say("p: no worker registered; add one with `p worker register user@host`")
        return 0
    checks: list[dict[str, object] | None] = [None] * len(config.workers)
    if check and config.workers:
        with ThreadPoolExecutor(max_workers=min(64, len(config.workers))) as pool:
            checks = list(pool.map(lambda w: _check(config, w), config.workers))
    failed = any(result is not None and not result["ok"] for result in checks)
    if as_json:
        print(json.dumps([{"name": w.name, "connection": w.connection, "default": w.name == config.default_worker,
                           "ssh_config": w.ssh_config, "engine": w.engine or ENGINES[0], "check": result}
                          for w, result in zip(config.workers, checks)], indent=1))
        return 1 if failed else 0
    headers = ["NAME", "CONNECTION", "DEFAULT"]
    rows = [[w.name, w.connection, "*" if w.name == config.default_worker else ""] for w in config.workers]
    if check:
        headers += ["ARCH", "SCRATCH", "FREE", "STATUS"]
        for row, result in zip(rows, checks):
            assert result is not None
            free = result["free"]
            row += [str(result["arch"] or "-"), str(result["scratch"] or "-"),
                    "-" if not isinstance(free, int) else size(free), str(result["problem"] or "ok")]
    print(render(headers, rows))
    return 1 if failed else 0


def _check(config: Config, worker: Worker) -> dict[str, object]:
    """What probing the worker found (as `p worker ls --json` shows it)."""
    try:
        transport = Transport(config, worker)
        facts = provision.probe(transport, timeout=CHECK_TIMEOUT, agents=False, space=True)
        provision.check_tools(transport, facts)
    except PError as exc:
        return {"ok": False, "arch": None, "scratch": None, "free": None, "problem": exc.message}
    return {"ok": True, "arch": facts.machine, "scratch": facts.scratch or None, "free": facts.free, "problem": None}


def rm(name: str) -> int:
    config = config_module.load()
    worker = config.worker(name)
    active = [r for r in Store().all()
              if r.worker == name and not r.finished]
    if active:
        ids = ", ".join(r.short_id for r in active[:5])
        raise PError(f"worker {name} has {len(active)} running job(s) ({ids}); stop them or wait "
                     "for them to end, then retry")
    Transport(config, worker).close_master()
    config.workers = [w for w in config.workers if w.name != name]
    if config.default_worker == name:
        config.default_worker = config.workers[0].name if config.workers else None
    config_module.save(config)
    now = f"; the default is now {config.default_worker}" if config.default_worker else ""
    output.say(f"p: removed worker {name}{now}")
    return 0


def clean(name: str) -> int:
    """Everything p keeps on a worker but its running jobs: finished jobs'
    directories, workdirs, every spare copy; and the records of those jobs."""
    store = Store()
    link = link_module.connect(name)
    try:
        removed = link.agent.request(Op.CLEAN, blocking=True)
    finally:
        link.close()
    known = {record.id for record in store.all()}
    for job_id in removed["jobs"]:
        if job_id in known:
            store.delete(job_id)
    output.say(f"p: cleaned worker {name}: removed {len(removed['jobs'])} finished job(s), "
               f"{removed['workdirs']} workdir(s) and {removed['spares']} spare copy(ies); running jobs kept")
    return 0


def default(name: str) -> int:
    config = config_module.load()
    config.worker(name)
    config.default_worker = name
    config_module.save(config)
    output.say(f"p: {name} is now the default worker")
    return 0
