"""The client's configuration: ``~/.config/p/config.yaml``.

Parsing YAML costs more than the rest of a warm `p -- cmd`, so the parsed
config is cached as JSON, keyed by the YAML file's size and mtime; editing
the YAML by hand invalidates the cache.
"""

from __future__ import annotations

import json
import os

from p_protocol import ENGINES, WORKER_NAME_RE
from p_protocol.jobspec import SLURM_NAME_RE, sbatch_arg_problem
from p_protocol.wire import KINDS

from . import paths
from .errors import PError
from .fsutil import atomic_write

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

# The exit status of a config the user must fix, as for a usage error.
CONFIG_ERROR = 2
# `p @all -- cmd`: every registered worker is in this pool.
ALL_POOL = "all"


def is_gpu_list(value: object) -> bool:
    return KINDS["indices"][1](value)


# Plain classes, not dataclasses: importing dataclasses costs a warm `p -- cmd`
# a tenth of its time.
class Worker:
    def __init__(self, name: str, connection: str, ssh_config: str | None = None,
                 ssh_options: list[str] | None = None, engine: str | None = None,
                 partition: str | None = None, account: str | None = None,
                 sbatch_args: list[str] | None = None, slots: int | None = None,
                 gpus: list[int] | None = None, pools: list[str] | None = None,
                 require_approval: bool = False) -> None:
        self.name = name
        self.connection = connection
        # Handed to ssh and rsync as `-F`: OpenSSH reads ~/.ssh/config from the
        # passwd entry's home, not $HOME, so an explicit file must be passable.
        self.ssh_config = ssh_config
        self.ssh_options = ssh_options or []
        # What runs its jobs (p_protocol.ENGINES); None: the first, tmux.
        self.engine = engine
        # A Slurm worker's own sbatch options, ahead of each job's.
        self.partition = partition
        self.account = account
        self.sbatch_args = sbatch_args or []
        # The worker's settings as this client last set or saw them; the
        # agent holds the truth (Op.CONFIGURE), so every client agrees.
        self.slots = slots  # jobs at once; None: no cap
        self.gpus = gpus  # declared GPU indices; None: detected there
        self.pools = pools or []  # `p @POOL -- cmd` may place jobs here
        self.require_approval = require_approval  # jobs wait for `p approve`

    def sbatch_options(self) -> list[str]:
        """What every job on this (Slurm) worker passes to sbatch first; a
        job's own --sbatch-arg comes later, and sbatch takes the last."""
        options = [f"--partition={self.partition}"] if self.partition else []
        options += [f"--account={self.account}"] if self.account else []
        return options + self.sbatch_args

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "connection": self.connection, "ssh_config": self.ssh_config,
                "ssh_options": self.ssh_options, "engine": self.engine, "slots": self.slots, "gpus": self.gpus,
                "pools": self.pools, "require_approval": self.require_approval}
        if self.engine == "slurm":
            data.update(partition=self.partition, account=self.account, sbatch_args=self.sbatch_args)
        return data


class Notify:
    """`notify:` in the config: what is told when a job ends (p/notify.py)."""

    def __init__(self, command: str | None = None, desktop: bool = False,
                 worker_command: str | None = None) -> None:
        self.command = command  # a shell command here, when p sees a job end
        self.desktop = desktop  # a desktop notification (notify-send), where there is one
        self.worker_command = worker_command  # run on the worker when any job ends there

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "desktop": self.desktop, "worker_command": self.worker_command}

    def __bool__(self) -> bool:
        return bool(self.command or self.desktop or self.worker_command)


# How long the verbs that follow a job (`p logs -f`, `p wait`, attach, the
# streaming run) keep reconnecting a broken link before they give up.
RECONNECT_FOR = 600.0


class Config:
    def __init__(self, default_worker: str | None = None, workers: list[Worker] | None = None,
                 ssh_config: str | None = None, ssh_options: list[str] | None = None, path: str = "",
                 reconnect_for: float = RECONNECT_FOR, detach_on_ctrl_c: bool = False,
                 notify: Notify | None = None) -> None:
        self.path = path  # the file it was read from, for the errors that name it
        self.default_worker = default_worker
        self.workers = workers or []
        self.ssh_config = ssh_config
        self.ssh_options = ssh_options or []
        self.reconnect_for = reconnect_for  # seconds; `reconnect_for: 10m` in the file
        # While attached, Ctrl+C detaches instead of reaching the job.
        self.detach_on_ctrl_c = detach_on_ctrl_c
        self.notify = notify or Notify()

    def to_dict(self) -> dict[str, Any]:
        return {"default_worker": self.default_worker, "workers": [w.to_dict() for w in self.workers],
                "ssh_config": self.ssh_config, "ssh_options": self.ssh_options,
                "reconnect_for": self.reconnect_for, "detach_on_ctrl_c": self.detach_on_ctrl_c,
                "notify": self.notify.to_dict()}

    def worker(self, name: str | None) -> Worker:
        wanted = name or self.default_worker
        if not self.workers:
            raise PError("no worker registered; add one with `p worker register user@host`")
        if wanted is None:
            raise PError("no default worker; choose one with `p worker default <name>`")
        for worker in self.workers:
            if worker.name == wanted:
                return worker
        names = ", ".join(w.name for w in self.workers)
        if name is None:
            raise PError(f"config file {self.path}: key 'default_worker' names {wanted!r}, which is not "
                         f"a registered worker ({names}); choose one with `p worker default <name>`",
                         exit_code=CONFIG_ERROR)
        raise PError(f"unknown worker {wanted!r}; registered workers: {names}", exit_code=CONFIG_ERROR)

    def has_worker(self, name: str) -> bool:
        return any(worker.name == name for worker in self.workers)

    def pool(self, name: str) -> list[Worker]:
        """The workers of pool ``name`` (``all``: every worker)."""
        members = [w for w in self.workers if name == ALL_POOL or name in w.pools]
        if not members:
            pools = sorted({pool for worker in self.workers for pool in worker.pools})
            known = f"pools: {', '.join(pools)}" if pools else "no worker is in a pool yet"
            raise PError(f"no worker is in pool {name!r} ({known}); add one with "
                         f"`p worker set NAME --pool {name}`", exit_code=CONFIG_ERROR)
        return members


def _stamp(path: str) -> list[int] | None:
    try:
        info = os.stat(path)
        if info.st_mode & 0o077 and info.st_uid == os.getuid():
            # An older p wrote it 0644 (and its directory 0755): it names hosts.
            os.chmod(path, 0o600)
            os.chmod(os.path.dirname(path), 0o700)
    except FileNotFoundError:
        return None
    except OSError:
        pass  # not ours to tighten: reading it is all p needs
    return [info.st_mtime_ns, info.st_size]


def _cache_file() -> str:
    return os.path.join(paths.cache_dir(), "config.json")


def load() -> Config:
    path = paths.config_file()
    stamp = _stamp(path)
    if stamp is None:
        return Config(path=path)
    try:
        with open(_cache_file()) as cached:
            entry = json.load(cached)
        if entry.get("path") == path and entry.get("stamp") == stamp:
            return _from_dict(entry["config"], path)
    except (OSError, ValueError, KeyError, TypeError, PError):
        pass
    config = _parse_yaml(path)
    _write_cache(path, config)
    return config


def save(config: Config) -> None:
    import yaml

    path = paths.config_file()
    data: dict[str, Any] = {"default_worker": config.default_worker}
    for key in ("ssh_config", "ssh_options"):
        if getattr(config, key):
            data[key] = getattr(config, key)
    if config.reconnect_for != RECONNECT_FOR:
        data["reconnect_for"] = config.reconnect_for
    if config.detach_on_ctrl_c:
        data["detach_on_ctrl_c"] = True
    if config.notify:
        data["notify"] = {key: value for key, value in config.notify.to_dict().items() if value}
    data["workers"] = [
        {k: v for k, v in worker.to_dict().items() if v not in (None, [], False)} for worker in config.workers
    ]
    atomic_write(path, yaml.safe_dump(data, sort_keys=False))
    _write_cache(path, config)


def _write_cache(path: str, config: Config) -> None:
    stamp = _stamp(path)
    try:
        atomic_write(_cache_file(), json.dumps({"path": path, "stamp": stamp, "config": config.to_dict()}))
    except OSError:
        pass  # a cache that cannot be written only costs time


def _parse_yaml(path: str) -> Config:
    import yaml

    try:
        with open(path) as src:
            data = yaml.safe_load(src)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise PError(f"config file {path} is not valid YAML{where}" + (f" ({problem})" if problem else "")
                     + "; fix or remove it", exit_code=CONFIG_ERROR) from None
    except IsADirectoryError:
        raise PError(f"config file {path} is a directory; remove it or make it a file",
                     exit_code=CONFIG_ERROR) from None
    except OSError as exc:
        raise PError(f"cannot read config file {path}: {exc.strerror}", exit_code=CONFIG_ERROR) from None
    except UnicodeDecodeError:
        raise PError(f"config file {path} is not UTF-8 text; fix or remove it", exit_code=CONFIG_ERROR) from None
    return _from_dict({} if data is None else data, path)


def _from_dict(data: Any, path: str) -> Config:
    """The one place a config becomes typed values; a bad value names the
    file and the key."""
    def bad(problem: str) -> PError:
        return PError(f"config file {path}: {problem}; fix or remove it", exit_code=CONFIG_ERROR)

    if not isinstance(data, dict):
        raise bad("the top level must be a mapping of keys (default_worker, workers, ...)")
    entries = data.get("workers")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise bad("key 'workers' must be a list of workers, each with name and connection")
    workers: list[Worker] = []
    for number, entry in enumerate(entries, 1):
        where = f"workers[{number}]"
        if not isinstance(entry, dict):
            raise bad(f"key '{where}' must be a mapping with name and connection")
        name, connection = entry.get("name"), entry.get("connection")
        if not isinstance(name, str) or not WORKER_NAME_RE.match(name):
            raise bad(f"key '{where}.name' ({name!r}) is missing or not a plain name")
        where = f"worker {name!r}"
        if any(worker.name == name for worker in workers):
            raise bad(f"{where} is listed twice under 'workers'")
        if not isinstance(connection, str) or not connection:
            raise bad(f"{where}: key 'connection' must be a connection string (user@host)")
        engine = _opt_str(entry, "engine", bad, where)
        if engine is not None and engine not in ENGINES:
            raise bad(f"{where}: key 'engine' must be one of {', '.join(ENGINES)}")
        slurm: dict[str, Any] = {}
        for key in ("partition", "account"):
            value = _opt_str(entry, key, bad, where)
            if value is not None and not SLURM_NAME_RE.match(value):
                raise bad(f"{where}: key {key!r} ({value!r}) is not a Slurm {key} name")
            slurm[key] = value
        slurm["sbatch_args"] = _str_list(entry, "sbatch_args", bad, where)
        for arg in slurm["sbatch_args"]:
            problem = sbatch_arg_problem(arg)
            if problem:
                raise bad(f"{where}: key 'sbatch_args': {problem}")
        if engine != "slurm" and (slurm["partition"] or slurm["account"] or slurm["sbatch_args"]):
            raise bad(f"{where}: partition, account and sbatch_args need 'engine: slurm'")
        slots = entry.get("slots")
        if slots is not None and (not isinstance(slots, int) or isinstance(slots, bool) or slots < 1):
            raise bad(f"{where}: key 'slots' must be a whole number of jobs, 1 or more")
        gpus = entry.get("gpus")
        if gpus is not None and not is_gpu_list(gpus):
            raise bad(f"{where}: key 'gpus' must be a list of distinct GPU indices (0, 1, ...)")
        pools = _str_list(entry, "pools", bad, where, "a list of pool names")
        if not all(WORKER_NAME_RE.match(pool) for pool in pools):
            raise bad(f"{where}: key 'pools' must name pools with letters, digits, '.', '_' and '-'")
        approval = entry.get("require_approval", False)
        if not isinstance(approval, bool):
            raise bad(f"{where}: key 'require_approval' must be true or false")
        workers.append(Worker(name, connection, _opt_str(entry, "ssh_config", bad, where),
                              _str_list(entry, "ssh_options", bad, where), engine, **slurm,
                              slots=slots, gpus=gpus, pools=pools, require_approval=approval))
    default = data.get("default_worker")
    if default is not None and not isinstance(default, str):
        raise bad("key 'default_worker' must be a worker name")
    return Config(default, workers, _opt_str(data, "ssh_config", bad), _str_list(data, "ssh_options", bad), path,
                  _duration(data, "reconnect_for", RECONNECT_FOR, bad), _bool(data, "detach_on_ctrl_c", bad),
                  _notify(data, bad))


def _bool(data: dict[str, Any], key: str, bad: Any, where: str = "") -> bool:
    value = data.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"{where + ': ' if where else ''}key {key!r} must be true or false")
    return value


def _notify(data: dict[str, Any], bad: Any) -> Notify:
    """`notify:` with `command:`, `desktop:` and `worker_command:`, each optional."""
    value = data.get("notify")
    if value is None:
        return Notify()
    if not isinstance(value, dict):
        raise bad("key 'notify' must be a mapping with command, desktop and worker_command")
    unknown = sorted(set(value) - {"command", "desktop", "worker_command"})
    if unknown:
        raise bad(f"notify: unknown key {unknown[0]!r} (known: command, desktop, worker_command)")
    return Notify(_opt_str(value, "command", bad, "notify"), _bool(value, "desktop", bad, "notify"),
                  _opt_str(value, "worker_command", bad, "notify"))


def _duration(data: dict[str, Any], key: str, default: float, bad: Any) -> float:
    """Seconds, written as a number or as `90s`, `15m`, `2h`."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    if isinstance(value, str):
        from p_protocol.jobspec import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            raise bad(f"key {key!r}: {exc}") from None
    raise bad(f"key {key!r} must be a duration (like 90s, 10m, 1h)")


def _opt_str(data: dict[str, Any], key: str, bad: Any, where: str = "") -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise bad(f"{where + ': ' if where else ''}key {key!r} must be a string")
    return value


def _str_list(data: dict[str, Any], key: str, bad: Any, where: str = "",
              what: str = "a list of Option=value strings") -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad(f"{where + ': ' if where else ''}key {key!r} must be {what}")
    return list(value)
