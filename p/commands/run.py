"""`p [worker] [-n] [-d] [-y] [job spec flags] -- <command>`: sync, start,
attach (or stream). The job spec flags (p/verbs.py) make a JobSpec."""

from __future__ import annotations

import json
import os
import sys
import time

from p_protocol import STOP_GRACE
from p_protocol.jobspec import (
    ENV_NAME_RE,
    EnvFileError,
    JobSpec,
    is_env,
    parse_duration,
    parse_env_file,
    parse_size,
    sbatch_arg_problem,
)
from p_protocol.states import State
from p_protocol.wire import Op

from .. import config, events, output, paths, results
from .. import link as link_module
from ..agent_client import AgentRefused
from ..errors import PError, Terminated
from ..fsutil import atomic_write
from ..link import Link
from ..reconcile import apply
from ..relink import Relink
from ..results import checked_relative, pull_results
from ..store import UNKNOWN, JobRecord, Store, new_job_id
from ..verbs import RUN_VALUE_USAGE

# The sync's modules (p.sync, p.manifest: processes, threads, hashes) and
# the attached terminal's are imported where they are needed: a run with
# `-n`, off a terminal, needs neither, and they cost its start ~4 ms.
TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

    from .. import manifest


# The most bytes of file names `_unblind` hands one `rm` (the worker's
# ARG_MAX is 128 KiB at the least); past it the workdir is emptied instead.
MAX_UNBLIND = 100_000


def run(worker_name: str | None, words: list[str], *, no_sync: bool, detach: bool, assume_yes: bool,
        job_spec: list[tuple[str, str]], dry_run_sync: bool = False, ctrl_c_detaches: bool = False,
        notify: bool = False) -> int:
    # As ssh does: the words are joined with spaces for the login shell.
    command = " ".join(words)
    if not command.strip():
        # A usage error, as for any command line p cannot run.
        raise PError("nothing to run; usage: p [worker] [-n] [-d] [-y] -- <command>", exit_code=2)
    # A sync option, kept in the record (for `p rerun`), not in the spec:
    # the worker never needs it.
    excludes = [value for kind, value in job_spec if kind == "exclude"]
    if dry_run_sync:
        from .. import sync

        return sync.print_plan(os.getcwd(), excludes)
    # Before any connection: a bad env file or a missing secret costs nothing,
    # and neither does a local port in use.
    spec, secrets = _job_spec(command, job_spec)
    forwards: list[tuple[int, int]] = []
    if any(kind == "port" for kind, _ in job_spec):
        from .. import ports  # its threads and locks cost a run without -p nothing

        forwards = [ports.parse_mapping(value) for kind, value in job_spec if kind == "port"]
        for _, local in forwards:
            ports.check_free(local)
    return launch(worker_name, spec, secrets, no_sync=no_sync, detach=detach, assume_yes=assume_yes,
                  excludes=excludes, forwards=forwards, ctrl_c_detaches=ctrl_c_detaches, notify=notify)


def launch(worker_name: str | None, spec: JobSpec, secrets: dict[str, str], *, no_sync: bool, detach: bool,
           assume_yes: bool, excludes: list[str], forwards: list[tuple[int, int]] | None = None,
           ctrl_c_detaches: bool = False, notify: bool = False, same_files_as: JobRecord | None = None,
           rerun_of: str | None = None) -> int:
    """Start a job as ``spec`` says (with its secrets' values) and see it
    through: sync the current directory (or, ``same_files_as``, copy that
    job's workdir on the worker), start, then attach, stream or print its
    id. ``forwards``: (remote, local) ports forwarded from the job's start
    until it ends (`-p`). ``ctrl_c_detaches`` (or the config's
    `detach_on_ctrl_c`): Ctrl+C detaches the attached terminal.
    ``notify``: a watcher tells of the job's end even when this `p` is gone
    (p/notify.py). The run form and `p rerun` both come here."""
    cwd = os.getcwd()
    store = Store()
    walk = None
    if not no_sync and same_files_as is None:
        from .. import manifest, sync

        sync.push_filter(cwd, excludes)  # a .pignore that cannot be read: before any connection
        # The directory as it is now, walked while the worker prepares: if
        # it is as last synced there, the sync may be skipped (p/manifest.py).
        walk = manifest.walker(cwd)
    pool = worker_name[1:] if worker_name is not None and worker_name.startswith("@") else None
    if pool is not None:
        from ..config import load
        from ..placement import place

        link = place(load(), pool, spec.gpus)
    else:
        link = link_module.connect(worker_name)
    worker = link.worker.name
    defaults = link.worker.sbatch_options() if link.worker.engine == "slurm" else []
    if spec.sbatch_args[:len(defaults)] != defaults:  # a rerun's spec holds them already
        spec.sbatch_args = defaults + spec.sbatch_args
    record = JobRecord(id=new_job_id(), worker=worker, cwd=output.display_cwd(cwd), spec=spec,
                       started_at=time.time(), synced=not no_sync, checked_at=time.time(), pool=pool)
    record.workdir, record.rerun_of, record.excludes = link.layout.workdir(record.id), rerun_of, excludes
    if same_files_as is not None:
        # Its files are that job's, and so is the directory they came from.
        record.cwd, record.synced = same_files_as.cwd, same_files_as.synced
        link.agent.request(Op.PREPARE, id=record.id, spare=None, source=same_files_as.id, blocking=True)
    elif walk is not None:
        _sync(link, store, record, cwd, excludes, assume_yes, walk)
    record.started_at = time.time()  # the job's clock starts after the sync
    store.save(record)  # before the start: a crash from here on leaves a record
    cols, rows = _terminal_size()
    # A terminal here: the job gets one there (and, unless detached, this
    # terminal attaches to it). Off one, the job gets none, as with ssh.
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    settings = config.load()  # cached: no YAML read
    ctrl_c_detaches = ctrl_c_detaches or settings.detach_on_ctrl_c
    try:
        started = link.agent.request(Op.START, id=record.id, spec=spec.to_json(), cwd=record.cwd,
                                     worker=worker, cols=cols, rows=rows, tty=tty, attach=tty and not detach,
                                     spare=record.spare, secrets=secrets, ctrl_c_detaches=ctrl_c_detaches,
                                     notify_command=settings.notify.worker_command)
    except KeyboardInterrupt as exc:
        # Ctrl+C or SIGTERM while the start was on its way: the job may
        # run already, and must get it rather than run on unseen.
        _halt(link, store, record, exc, starting=True)
        raise
    except AgentRefused:
        store.delete(record.id, event="refused")  # nothing runs
        raise
    except PError:
        # No answer: the job may be running. Keep the record for `p ls`.
        record.status = UNKNOWN
        store.save(record)
        raise
    try:
        if started["job"]["state"] == State.RUNNING.value:
            events.append("started", record.id, worker, State.RUNNING.value)
        record = apply(record, started["job"])
        # Waiting in the worker's queue (not in an engine's, such as Slurm's,
        # which its attach command waits out by itself).
        in_queue = record.position is not None
        if in_queue:
            store.save(record)  # queued, pending approval: `p ls` says so
        if notify:
            from .. import notify as notifications

            notifications.watch(record.id)
        if forwards:
            from .. import ports

            for remote, local in forwards:
                # Held by a process of its own, so it outlives a detach (or -d)
                # and ends with the job.
                ports.say_started(ports.start_background(record.id, remote, local))
        if detach:
            if in_queue:
                from ..joblink import waiting_line

                output.say(waiting_line(record))
            print(record.id, flush=True)
            return 0
    except KeyboardInterrupt as exc:
        _halt(link, store, record, exc, starting=False)
        raise
    argv = started["argv"]
    if in_queue:
        from ..joblink import wait_for_start

        view, link = wait_for_start(link, record, stream=not tty)
        if view is not None:
            record = apply(record, view)
            if State(record.status).finished:  # stopped or rejected while it waited
                store.save(record)
                output.say(output.summary(record))
                return output.exit_status(record)
            argv = link.agent.request(Op.ATTACH, id=record.id, ctrl_c_detaches=ctrl_c_detaches)["argv"]
    if argv is not None:
        from .attach import attach_session

        link.close()
        return attach_session(link, record, argv, ctrl_c_detaches)
    return _stream(link, store, record)


def _sync(link: Link, store: Store, record: JobRecord, cwd: str, excludes: list[str], assume_yes: bool,
          walk: manifest.Walk) -> None:
    """Bring the job's workdir to what ``cwd`` holds: the worker hands over
    the spare copy of the last sync, and rsync updates it, unless nothing
    changed since the sync that spare is an exact copy of (p/manifest.py)."""
    from .. import manifest, sync

    worker = link.worker.name
    last = manifest.load(cwd, worker)
    filter_rules = sync.push_filter(cwd, excludes)
    # Files that look secret take a yes before anything is prepared; when the
    # last sync had none, only if something changed since.
    secrets = None
    if last is None or last.secrets:
        secrets = _confirm_sensitive(cwd, worker, assume_yes, excludes)
    record.spare = _spare_key(cwd)
    prepared = link.agent.request(Op.PREPARE, id=record.id, spare=record.spare)
    tree = walk.result()
    unchanged = prepared["reused"] and last is not None and last.describes(filter_rules, tree, prepared["origin"])
    try:
        if secrets is None:
            secrets = False if unchanged else _confirm_sensitive(cwd, worker, assume_yes, excludes)
    except BaseException:
        _forsake(link, record)
        raise
    if unchanged:
        sent: sync.Sent | None = sync.Sent(0, 0)  # the workdir holds it all already
    else:
        try:
            if prepared["reused"] and last is not None and tree is not None and prepared["origin"] == last.sync:
                before = last.entries()
                _unblind(link, record, None if before is None else manifest.quick_check_blind(before, tree))
            sent = sync.push(link.transport, cwd, record.workdir,
                             None if prepared["reused"] else _previous_workdir(link, store, record),
                             exact=prepared["reused"], excludes=excludes)
        except BaseException as exc:
            try:
                full = _full_disk(link, exc)
            except PError:
                full = None
            _forsake(link, record)
            if full is not None:
                raise sync.no_space_on_worker(worker, full) from None
            raise
    if sent is not None:
        record.sync_files, record.sync_bytes = sent.files, sent.bytes
    # Walked before rsync read a file: whatever changed after is newer than
    # the manifest says, and the next run syncs it.
    if tree is not None and not tree.racy:
        manifest.save(cwd, worker, filter_rules, tree, record.id, secrets, last)
    else:
        manifest.forget(cwd, worker)


def _unblind(link: Link, record: JobRecord, blind: list[bytes] | None) -> None:
    """Files changed since the sync the workdir is an exact copy of, whose
    size and mtime are as they were (a same-size edit within the second,
    `touch -d`): rsync's quick check would keep the workdir's old copies,
    so those go from it first and rsync sends them whole. None: which they
    are is not known (the manifest's entries are lost), so all go."""
    if blind == []:
        return
    import shlex

    try:
        names = None if blind is None else " ".join(shlex.quote(name.decode()) for name in blind)
    except UnicodeDecodeError:
        names = None  # not UTF-8: no script can name it
    if names is not None and len(names) > MAX_UNBLIND:
        names = None  # more than one rm's arguments can hold
    workdir = shlex.quote(record.workdir)
    link.transport.run_script(f"cd -- {workdir} && find . -mindepth 1 -delete" if names is None
                              else f"cd -- {workdir} && rm -f -- {names}")


def _forsake(link: Link, record: JobRecord) -> None:
    """The prepared workdir goes: no job will own it."""
    try:
        link.agent.request(Op.REMOVE, id=record.id, force=True)
    except PError:
        pass


def _halt(link: Link, store: Store, record: JobRecord, signal: KeyboardInterrupt, *, starting: bool) -> None:
    """Pass a Ctrl+C (SIGINT) or SIGTERM that reached `p` around the job's
    start on to the job, and keep its record true. ``starting``: the start
    request may not have reached the agent yet; it is looked for briefly."""
    for _ in range(20 if starting else 1):
        view = link.agent.request(Op.STATUS, ids=[record.id])["jobs"].get(record.id)
        if view is not None:
            break
        time.sleep(0.1)
    else:
        # Not there yet: a start may still be on its way (an engine that is
        # slow to submit). `p ls` settles it with the worker either way.
        record.status = UNKNOWN
        store.save(record)
        return
    if isinstance(signal, Terminated):
        view = link.agent.stop(record.id, grace=STOP_GRACE) or view
    else:
        link.agent.request(Op.INTERRUPT, id=record.id)
    store.save(apply(record, view))


def _stream(link: Link, store: Store, record: JobRecord) -> int:
    """Off a terminal: the job's output on stdout as it comes, then its status."""
    writer = output.LogWriter(sys.stdout.buffer, raw=False)
    relink = Relink(link, what=f"streaming job {record.short_id}", resume_hint=f"`p logs -f {record.short_id}`")

    def copy(link: Link) -> dict[str, Any] | None:
        stream = link.agent.stream_log(record.id, writer.written, follow=True)
        while True:
            try:
                writer.write(next(stream))
            except StopIteration as end:
                return end.value  # the job as the stream's end found it

    interrupted = False
    while True:
        try:
            view = relink.follow(copy)
            break
        except BrokenPipeError:
            # Whoever read the output is gone (`p -- yes | head`): as with
            # ssh, the job ends too.
            relink.link.agent.stop(record.id, grace=2.0)
            raise
        except Terminated:
            # SIGTERM goes on to the job as `p stop` sends it; its last
            # output and exit status are streamed as usual.
            relink.link.agent.stop(record.id, grace=STOP_GRACE)
        except KeyboardInterrupt:
            # First Ctrl+C goes to the job, as in a terminal; a second one
            # leaves the job running and returns.
            if interrupted:
                output.say(f"p: left job {record.short_id} running; `p logs -f {record.short_id}` follows it")
                return 130
            interrupted = True
            relink.link.agent.request(Op.INTERRUPT, id=record.id)
    writer.finish()
    if view is not None and not State(view["state"]).finished:
        view = relink.follow(lambda link: link.agent.wait(record.id))
    record = apply(record, view)
    store.save(record)
    pulled = pull_results(relink.link, record)
    relink.link.close()
    if record.status == State.LOST.value:
        if view is not None and view.get("reason"):
            raise PError(f"job {record.short_id} is lost: {view['reason']}", exit_code=255)
        raise PError(output.summary(record).removeprefix("p: "), exit_code=255)
    return results.exit_status(record, pulled)


def _full_disk(link: Link, failure: BaseException) -> str | None:
    """Where the worker's workdirs live, if a failed sync filled that disk:
    rsync says so, or only of a broken pipe (its receiver died of it)."""
    if not isinstance(failure, PError):
        return None
    from .. import sync

    scratch = link.agent.request(Op.SCRATCH, path=None)
    return scratch["path"] if isinstance(failure, sync.NoSpace) or scratch["free"] < 1 << 20 else None


def _job_spec(command: str, flags: list[tuple[str, str]]) -> tuple[JobSpec, dict[str, str]]:
    """The job's spec from the run form's flags, and its secrets' values
    (which go to the worker only, never into the spec or a record)."""
    env, secrets = _variables(flags)
    fields: dict[str, object] = {}
    for kind, value in flags:
        try:
            if kind in _PARSERS:
                fields[kind] = _PARSERS[kind](value)
            elif kind in ("sbatch_args", "pull"):
                fields.setdefault(kind, []).append(value)  # type: ignore[union-attr]
        except ValueError as exc:
            raise PError(f"{RUN_VALUE_USAGE[kind].split()[0]}: {exc}", exit_code=2) from None
    for arg in fields.get("sbatch_args", []):  # type: ignore[union-attr]
        problem = sbatch_arg_problem(str(arg))
        if problem:
            raise PError(f"--sbatch-arg: {problem}", exit_code=2)
    fields["pull"] = [_pull_path(path) for path in fields.get("pull", [])]  # type: ignore[union-attr]
    return JobSpec(command, env=env, secrets=list(secrets), **fields), secrets


def _pull_path(path: str) -> str:
    try:
        return checked_relative(path)
    except PError as exc:
        raise PError(f"--pull {path}: {exc.message}", exit_code=2) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def _positive(text: str) -> int:
    number = _count(text)
    if number < 1:
        raise ValueError(f"{text!r}: must be 1 or more")
    return number


_PARSERS = {"timeout": parse_duration, "max_output": parse_size, "mem": parse_size, "gpus": _count,
            "cpus": _positive, "nodes": _positive}


def _variables(job_spec: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """The job's env (`-e`, `--env-file`, later ones overriding) and its
    secrets (`--secret`: names to values, which go to the worker only)."""
    env: dict[str, str] = {}
    secret_names: list[str] = []
    for kind, value in job_spec:
        if kind == "env":
            name, equals, text = value.partition("=")
            if not equals or not ENV_NAME_RE.match(name):
                raise PError(f"-e {value!r}: expected NAME=VALUE with NAME a shell variable name "
                             "(letters, digits, _; not starting with a digit)", exit_code=2)
            env[name] = text
        elif kind == "env_file":
            env.update(_read_env_file(value))
        elif kind == "secret":
            if not ENV_NAME_RE.match(value):
                raise PError(f"--secret {value!r}: expected the name of an environment variable", exit_code=2)
            if value not in secret_names:
                secret_names.append(value)
    if not is_env(env):
        raise PError("a variable's value holds a NUL byte, which no environment can carry", exit_code=2)
    both = [name for name in secret_names if name in env]
    if both:
        raise PError(f"{both[0]} is given both as a variable and as a secret; pass it once", exit_code=2)
    return env, secret_values(secret_names)


def secret_values(names: list[str]) -> dict[str, str]:
    """The values of the secrets ``names``, read now (see _secret_value)."""
    return {name: _secret_value(name) for name in names}


def _read_env_file(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as src:
            text = src.read()
    except OSError as exc:
        raise PError(f"cannot read env file {path}: {exc.strerror}", exit_code=2) from None
    except UnicodeDecodeError:
        raise PError(f"env file {path} is not UTF-8 text", exit_code=2) from None
    try:
        return parse_env_file(text)
    except EnvFileError as exc:
        raise PError(f"env file {path}, line {exc.line}: {exc.problem}", exit_code=2) from None


def _secret_value(name: str) -> str:
    """``$name`` here, else typed without echo on a terminal. Never printed,
    stored or put in an argv: it travels in the start request only."""
    value = os.environ.get(name)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise PError(f"secret {name} is not set; export {name} first (or run p on a terminal to type it)",
                     exit_code=2)
    import getpass

    try:
        return getpass.getpass(f"p: {name} (secret, not echoed): ")
    except EOFError:
        raise PError(f"no value typed for secret {name}", exit_code=2) from None


def _confirm_sensitive(cwd: str, worker: str, assume_yes: bool, excludes: list[str]) -> bool:
    """Syncing what looks like credentials takes a yes: asked on a terminal
    (once for a set of such files in a directory), `--yes` off one. Whether
    there were such files."""
    from .. import sync

    found = sync.sensitive_files(cwd, excludes)
    if not found or assume_yes:
        return bool(found)
    allowed = _allowed_sensitive()
    if set(found) <= set(allowed.get(cwd, [])):
        return True  # agreed to before, and nothing new since
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise PError(f"{output.display_cwd(cwd)} holds files that look secret and no .gitignore excludes: "
                     f"{shown}; exclude them in .gitignore or .pignore, run with -n, or pass --yes to sync them")
    print(f"p: sync files that look secret to {worker}? {shown} (no .gitignore excludes them) [y/N] ",
          end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise PError("nothing synced, nothing run; exclude those files in .gitignore or .pignore, or run with -n")
    allowed[cwd] = found
    atomic_write(_allowed_sensitive_file(), json.dumps(allowed))
    return True


def _allowed_sensitive_file() -> str:
    return os.path.join(paths.data_dir(), "sensitive-ok.json")


def _allowed_sensitive() -> dict[str, list[str]]:
    """Per directory, the files that look secret which the user agreed to sync."""
    try:
        with open(_allowed_sensitive_file()) as src:
            data = json.load(src)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {cwd: names for cwd, names in data.items() if isinstance(names, list)}


def _spare_key(cwd: str) -> str:
    """Names this machine's directory on the worker (see Op.PREPARE). The
    host's name as socket.gethostname() gives it, without importing socket."""
    return paths.name_digest(f"{os.uname().nodename}\0{cwd}")


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        # A terminal nobody sized (a pty made by `script`, an emulator
        # starting up) says 0x0: the job gets the usual default.
        return size.columns or 80, size.lines or 24
    except OSError:
        return 80, 24


def _previous_workdir(link: Link, store: Store, record: JobRecord) -> str | None:
    """An earlier workdir of the same directory on the same worker, if one is
    still there, to copy unchanged files from instead of sending them."""
    candidates = [r for r in store.all()
                  if r.worker == record.worker and r.cwd == record.cwd and r.synced]
    if not candidates:
        return None
    recent = [r.id for r in sorted(candidates, key=lambda r: r.started_at, reverse=True)[:5]]
    present = link.agent.request(Op.WORKDIRS, ids=recent)["present"]
    return link.layout.workdir(present[0]) if present else None
