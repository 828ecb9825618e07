"""`p worker register|ls|set|rm|clean|default`: the registered workers."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

from p_protocol import ENGINES, VERSION, WORKER_NAME_RE, WORKER_TOOLS
from p_protocol.jobspec import SLURM_NAME_RE, sbatch_arg_problem
from p_protocol.wire import Op

from .. import config as config_module
from .. import link as link_module
from .. import output, provision
from ..config import ALL_POOL, Worker
from ..errors import PError
from ..placement import SURVEY_SECONDS, Answer, survey
from ..ssh import Transport, host_of, split_connection
from ..store import Store
from ..table import render, size
from ..verbs import VERBS

CHECK_TIMEOUT = 20.0


class Settings:
    """A worker's settings as `register` and `set` take them; None: unchanged."""

    def __init__(self, slots: int | None = None, gpus: str | None = None, pools: list[str] | None = None,
                 no_pools: list[str] | None = None, require_approval: bool | None = None) -> None:
        self.slots = slots
        self.gpus = _gpu_list(gpus) if gpus is not None else None
        self.pools = pools or []
        self.no_pools = no_pools or []
        self.require_approval = require_approval
        for pool in (*self.pools, *self.no_pools):
            if not WORKER_NAME_RE.match(pool) or pool == ALL_POOL:
                raise PError(f"{pool!r} cannot name a pool (letters, digits, '.', '_', '-'; "
                             f"`{ALL_POOL}` is every worker already)", exit_code=2)

    def for_agent(self) -> dict[str, object]:
        """What goes to the worker's agent (Op.CONFIGURE): pools stay here."""
        fields: dict[str, object] = {}
        if self.slots is not None:
            fields["slots"] = self.slots
        if self.gpus is not None:
            fields["gpus"] = self.gpus
        if self.require_approval is not None:
            fields["approval"] = self.require_approval
        return fields

    def apply(self, worker: Worker, info: dict[str, object] | None) -> None:
        """Into the client's config: pools as asked, the rest as the agent says."""
        worker.pools = [pool for pool in dict.fromkeys([*worker.pools, *self.pools]) if pool not in self.no_pools]
        if info is not None:
            worker.slots = info["slots"]  # type: ignore[assignment]
            worker.gpus = None if info["gpus_detected"] else info["gpus"]  # type: ignore[assignment]
            worker.require_approval = bool(info["approval"])


def _gpu_list(text: str) -> list[int] | str:
    if text.strip().lower() == "auto":
        return "auto"  # type: ignore[return-value]
    words = [word.strip() for word in text.split(",") if word.strip()]
    if not all(word.isdigit() and int(word) <= 1023 for word in words) or len(set(words)) != len(words):
        raise PError(f"--gpus {text!r}: expected distinct GPU indices such as 0,1,2,3 (or auto)", exit_code=2)
    return [int(word) for word in words]


def register(connection: str, name: str | None, ssh_config: str | None, make_default: bool,
             scratch: str | None = None, slurm: Worker | None = None, settings: Settings | None = None) -> int:
    """``slurm``: a Slurm login node, with the settings of its jobs (a
    Worker with only those set); ``settings``: its slots, GPUs, pools and
    approval."""
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
    facts = provision.probe(transport)  # its master starts with it
    if slurm is not None and facts.missing_slurm:
        raise PError(f"{connection} lacks {', '.join(facts.missing_slurm)} on PATH, so it is no Slurm login "
                     "node for p; install Slurm's client there, or make its login shell find them")
    agent = link_module.connect_cold(transport, facts)
    settings = settings or Settings()
    try:
        if agent.engine != (worker.engine or "tmux"):
            raise PError(f"{connection} already serves p with {agent.engine} jobs (one engine per login); "
                         f"register it with another user, or `p worker rm` the worker that uses it")
        if scratch is not None:
            placed = agent.request(Op.SCRATCH, path=scratch, blocking=True)
        info = agent.request(Op.CONFIGURE, **settings.for_agent())["worker"] if settings.for_agent() else None
    finally:
        agent.close()
    settings.apply(worker, info)
    if make_default or config.default_worker is None or not config.has_worker(config.default_worker):
        config.default_worker = name
    config_module.save(config)
    default = " (default)" if config.default_worker == name else ""
    output.say(f"p: registered worker {name}{default}: {connection}, {facts.system} {facts.machine}, "
               f"p-agent {VERSION}")
    if scratch is not None:
        _say_scratch(name, placed)
    if info is not None:
        output.say(f"p: worker {name}: {_settings_text(info)}")
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


def set_(name: str, scratch: str | None, settings: Settings | None = None) -> int:
    """Change a worker's settings: those kept on the worker (scratch space,
    slots, GPUs, approval) go to its agent; its pools are this client's."""
    settings = settings or Settings()
    if scratch is None and not settings.for_agent() and not settings.pools and not settings.no_pools:
        raise PError(f"nothing to set for worker {name}; see `p worker set --help`")
    config = config_module.load()
    worker = config.worker(name)
    info = None
    if scratch is not None or settings.for_agent():
        link = link_module.connect(name, config=config)
        try:
            if scratch is not None:
                placed = link.agent.request(Op.SCRATCH, path=scratch, blocking=True)
                _say_scratch(name, placed)
            if settings.for_agent():
                info = link.agent.request(Op.CONFIGURE, **settings.for_agent())["worker"]
        finally:
            link.close()
    settings.apply(worker, info)
    config_module.save(config)
    if info is not None:
        output.say(f"p: worker {name}: {_settings_text(info)}")
    if settings.pools or settings.no_pools:
        output.say(f"p: worker {name} is in pools: {', '.join(worker.pools) or 'none'}")
    return 0


def _settings_text(info: dict[str, object]) -> str:
    slots = "no cap on jobs at once" if info["slots"] is None else f"{info['slots']} job(s) at once"
    gpus = info["gpus"] or []
    found = " (detected)" if info["gpus_detected"] else ""
    gpu_text = f"GPUs {','.join(map(str, gpus))}{found}" if gpus else f"no GPUs{found}"  # type: ignore[call-overload]
    approval = "; jobs wait for `p approve`" if info["approval"] else ""
    drained = "; drained" if info["drained"] else ""
    return f"{slots}, {gpu_text}{approval}{drained}"


def drain(names: list[str], every: bool, *, drained: bool) -> int:
    """`p worker drain|resume`: the flag lives on the worker, for every client."""
    config = config_module.load()
    verb = "drain" if drained else "resume"
    if every == bool(names):
        raise PError(f"give worker names or --all; usage: p worker {verb} NAME... | --all", exit_code=2)
    workers = config.workers if every else [config.worker(name) for name in names]
    failed = False
    for worker in workers:
        try:
            link = link_module.connect(worker.name, config=config)
            try:
                info = link.agent.request(Op.CONFIGURE, drained=drained)["worker"]
            finally:
                link.close()
        except PError as exc:
            output.say(output.about_worker(worker.name, exc.message))
            failed = True
            continue
        if drained:
            output.say(f"p: drained worker {worker.name}: it takes no new jobs; {info['queued']} queued "
                       f"wait, {info['running']} running finish. `p worker resume {worker.name}` undoes it")
        else:
            output.say(f"p: worker {worker.name} takes jobs again ({info['queued']} queued)")
    return 1 if failed else 0


def _say_scratch(name: str, placed: dict[str, object]) -> None:
    output.say(f"p: worker {name} keeps workdirs and spare copies in {placed['path']} "
               f"({size(int(str(placed['free'])))} free)")


def ls(check: bool, as_json: bool = False) -> int:
    config = config_module.load()
    if not config.workers and not as_json:
        output.say("p: no worker registered; add one with `p worker register user@host`")
        return 0
    # Every agent asked at once (a cold one started first): its INFO, and
    # with --check what it finds on its worker (Op.CHECK), over its link.
    answers = survey(config, config.workers, CHECK_TIMEOUT if check else SURVEY_SECONDS,
                     keep_links=check) if config.workers else []
    checks: list[dict[str, object] | None] = [None] * len(config.workers)
    if check and answers:
        with ThreadPoolExecutor(max_workers=min(64, len(answers))) as pool:
            checks = list(pool.map(_check, answers))
    failed = any(result is not None and not result["ok"] for result in checks)
    if as_json:
        print(json.dumps([{"name": w.name, "connection": w.connection, "default": w.name == config.default_worker,
                           "ssh_config": w.ssh_config, "engine": w.engine or ENGINES[0], "check": result,
                           "pools": w.pools, "state": _state_json(answer), "problem": answer.problem}
                          for w, result, answer in zip(config.workers, checks, answers)], indent=1))
        return 1 if failed else 0
    headers = ["NAME", "CONNECTION", "DEFAULT", "POOLS", "SLOTS", "QUEUE", "GPUS", "STATE"]
    rows = [[w.name, w.connection, "*" if w.name == config.default_worker else "-", ",".join(w.pools) or "-",
             *_usage(answer)] for w, answer in zip(config.workers, answers)]
    if check:
        headers += ["ARCH", "SCRATCH", "FREE", "STATUS"]
        for row, result in zip(rows, checks):
            assert result is not None
            free = result["free"]
            row += [str(result["arch"] or "-"), str(result["scratch"] or "-"),
                    "-" if not isinstance(free, int) else size(free), str(result["problem"] or "ok")]
    print(render(headers, rows))
    return 1 if failed else 0


def _state_json(answer: Answer) -> dict[str, object] | None:
    """What the worker's agent said (p/schema.py WORKER_STATE), or None."""
    info = answer.info
    if info is None:
        return None
    return {"slots": info["slots"], "slots_used": info["running"], "queued": info["queued"],
            "pending_approval": info["pending"], "gpus": info["gpus"], "gpus_free": info["gpus_free"],
            "gpus_detected": info["gpus_detected"], "drained": info["drained"],
            "require_approval": info["approval"], "load": info["load"], "cpus": info["cpus"]}


def _usage(answer: Answer) -> list[str]:
    """SLOTS (used/cap), QUEUE, GPUS (free/total) and STATE of one worker."""
    info = answer.info
    if info is None:
        return ["-", "-", "-", "unreachable"]
    slots = f"{info['running']}/{info['slots'] if info['slots'] is not None else '-'}"
    gpus = f"{len(info['gpus_free'])}/{len(info['gpus'])}" if info["gpus"] else "-"
    state = "drained" if info["drained"] else "ok"
    if info["approval"]:
        state += ",approval"
    return [slots, str(info["queued"]), gpus, state]


def _check(answer: Answer) -> dict[str, object]:
    """What the worker's agent found there (as `p worker ls --json` shows it),
    or why it could not be asked."""
    try:
        if answer.link is None:
            raise PError(answer.problem or f"worker {answer.worker.name} did not answer")
        found = answer.link.agent.request(Op.CHECK)
        missing = [tool for tool in WORKER_TOOLS if tool in found["missing"]]  # no other name is printed
        if missing:
            raise provision.lacking(answer.worker.name, missing)
    except PError as exc:
        return {"ok": False, "arch": None, "scratch": None, "free": None, "problem": exc.message}
    finally:
        answer.close()
    return {"ok": True, "arch": found["machine"], "scratch": found["scratch"], "free": found["free"], "problem": None}


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
