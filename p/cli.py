"""The typer app: thin wrappers, one per verb, over `p.commands`."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from p_protocol import STOP_GRACE

from . import __version__
from .completion import job_candidates, worker_candidates

RUN_HELP = """\
Push a command to a worker and track it as a job.

  p [WORKER|@POOL] [-w WORKER|@POOL] [-n|--no-sync] [-d|--detach] [-y|--yes] [-g N]
    [--ctrl-c-detaches] [--notify] [-e NAME=VALUE]... [--env-file FILE]... [--secret NAME]...
    [--pull PATH]... [--exclude PATTERN]... [--dry-run-sync] [-p REMOTE[:LOCAL]]... -- COMMAND...

syncs the current directory to WORKER (default: the default worker; @POOL:
the least loaded worker of that pool, @all: of all), runs COMMAND there in
tmux and attaches: Ctrl+B D detaches, the job keeps running. A worker with
no free slot (or not the -g N GPUs asked for) queues the job and starts it
when room frees; p says so and attaches then.
Off a terminal the job gets no terminal either (stdin is /dev/null, as with
`ssh -n`) and its output streams to stdout. `p` exits with the job's exit
status. --yes syncs files that look secret (.ssh/, *.pem, .env, id_*)
without asking. -e and --env-file (dotenv lines) put variables in the
job's environment; --secret NAME passes $NAME (asked for on a terminal
when unset) to the job only: in no argv, record or log. --pull PATH copies
PATH from the job's workdir into the current directory when the job ends.
A .pignore file (gitignore syntax) and --exclude PATTERN leave more out of
the sync than .gitignore does; --dry-run-sync lists what would be synced.
-p forwards the job's port REMOTE to localhost:LOCAL until the job ends.
--ctrl-c-detaches (or detach_on_ctrl_c: true in the config): while
attached, Ctrl+C detaches instead of reaching the job. --notify: tell
of the job's end as `notify:` in the config says, even after p returned.

Scripts and coding agents: `p help agents`.
"""

# add_completion: typer's --install-completion and --show-completion; the
# shells' calls are answered by p/completion.py first, then by typer.
app = typer.Typer(help=RUN_HELP, no_args_is_help=True, add_completion=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})
worker_app = typer.Typer(help="Register and manage workers.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")

JobArg = Annotated[str, typer.Argument(help="job id or a unique prefix of it, as `p ls` shows",
                                       autocompletion=job_candidates)]
WorkerArg = Annotated[str, typer.Argument(help="a registered worker's name", autocompletion=worker_candidates)]
# A worker's settings, at `worker register` and `worker set`.
SlotsOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--slots", min=0, help="how many jobs run there at once; more wait in its queue (0: no cap, the default)")]
GpusOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--gpus", help="its GPU indices, e.g. 0,1,2,3 (auto: detect with nvidia-smi -L, the default)")]
PoolOpt = Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
    "--pool", help="put it in this pool, for `p @POOL -- cmd` (repeatable)")]
ApprovalOpt = Annotated[Optional[bool], typer.Option(  # noqa: UP045
    "--require-approval/--no-require-approval",
    help="jobs sent there wait in state pending-approval until `p approve ID`")]


def _done(code: int) -> None:
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        print(f"p {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks on errors")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version,  # noqa: UP045
                                                    is_eager=True, help="print the version")] = None,
) -> None:
    """Push jobs to workers."""


@app.command("ls")
def ls_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", "-r", help="ask workers about running jobs now")] = False,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="every job, not only the newest 30")] = False,
    wide: Annotated[bool, typer.Option("--wide", "-w", help="also the CPU time and peak memory of ended jobs")
                    ] = False,
) -> None:
    """List jobs across all workers: running ones and the newest 30."""
    from .commands.ls import ls

    _done(ls(as_json, refresh, show_all, wide))


@app.command()
def attach(job: JobArg,
           ctrl_c_detaches: Annotated[bool, typer.Option(
               "--ctrl-c-detaches", help="Ctrl+C detaches instead of reaching the job (config: detach_on_ctrl_c)")
           ] = False,
           ) -> None:
    """Re-attach to a job's tmux session; for one that ended unwatched, print its output and status."""
    from .commands.attach import attach as attach_job

    _done(attach_job(job, ctrl_c_detaches))


@app.command()
def logs(job: JobArg,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="follow until the job ends")] = False) -> None:
    """Print a job's captured output."""
    from .commands.logs import logs as show_logs

    _done(show_logs(job, follow))


@app.command()
def wait(job: JobArg,
         pull: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
             "--pull", metavar="PATH", help="copy PATH from the job's workdir into . once it ends (repeatable)")
         ] = None,
         ) -> None:
    """Wait for a job to end; copy back its --pull paths; exit with its status."""
    from .commands.wait import wait as wait_job

    _done(wait_job(job, pull))


@app.command()
def show(job: JobArg,
         as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (docs/json.md)")] = False,
         ) -> None:
    """Everything about one job: command, worker, spec, times, state, resource use, sync, events."""
    from .commands.show import show as show_job

    _done(show_job(job, as_json))


@app.command()
def events(job: Annotated[Optional[str], typer.Argument(  # noqa: UP045
               help="only this job's (an id or a unique prefix of it)", autocompletion=job_candidates)] = None,
           follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
           ) -> None:
    """What happened to jobs, in order: this client's event log merged with its workers'."""
    from .commands.events import events as show_events

    _done(show_events(job, follow, as_json))


@app.command()
def rerun(job: JobArg,
          same_files: Annotated[bool, typer.Option(
              "--same-files", help="copy the job's workdir on the worker instead of syncing .")] = False,
          detach: Annotated[bool, typer.Option("--detach", "-d", help="start it and print its id")] = False,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="sync files that look secret without asking")
                         ] = False,
          ) -> None:
    """Start a new job with an earlier one's command, worker and spec; syncs the current directory."""
    from .commands.rerun import rerun as rerun_job

    _done(rerun_job(job, same_files, detach, yes))


@app.command()
def stop(job: JobArg,
         grace: Annotated[float, typer.Option("--grace", "-t",
                                              help="seconds between SIGTERM and SIGKILL")] = STOP_GRACE,
         ) -> None:
    """Kill a running job (SIGTERM, then SIGKILL)."""
    from .commands.stop import stop as stop_job

    _done(stop_job(job, grace))


@app.command()
def pull(job: JobArg,
         remote_path: Annotated[str, typer.Argument(help="path inside the job's workdir")],
         local_dest: Annotated[Optional[str], typer.Argument(help="where to put it (default: .)")] = None,  # noqa: UP045
         ) -> None:
    """Copy a file or directory from a job's workdir."""
    from .commands.pull import pull as pull_path

    _done(pull_path(job, remote_path, local_dest))


@app.command()
def rm(job: Annotated[Optional[str], typer.Argument(  # noqa: UP045
           help="job id or a unique prefix of it, as `p ls` shows", autocompletion=job_candidates)] = None,
       force: Annotated[bool, typer.Option("--force", "-f", help="stop a running job first")] = False,
       every: Annotated[bool, typer.Option("--all", "-a", help="every finished job")] = False,
       keep_cache: Annotated[bool, typer.Option(
           "--keep-cache", help="keep the worker's copy of the synced directory for the next sync")] = False,
       ) -> None:
    """Remove a job's record and its files on the worker.

    With the last job from a directory goes the worker's spare copy of that
    directory, unless --keep-cache.
    """
    from .commands.rm import rm as remove

    _done(remove(job, force, keep_cache, every))


@app.command()
def approve(job: Annotated[Optional[str], typer.Argument(  # noqa: UP045
        help="job id or a unique prefix of it; none: list the jobs pending approval")] = None) -> None:
    """Let a job pending approval run (see `p worker set --require-approval`)."""
    from .commands.approve import approve as approve_job

    _done(approve_job(job))


@app.command()
def reject(job: JobArg) -> None:
    """End a job pending approval without running it."""
    from .commands.reject import reject as reject_job

    _done(reject_job(job))


@app.command()
def port(job: Annotated[Optional[str], typer.Argument(  # noqa: UP045
             help="job id or a unique prefix of it (with --stop: a local port or a job)",
             autocompletion=job_candidates)] = None,
         mapping: Annotated[Optional[str], typer.Argument(  # noqa: UP045
             metavar="REMOTE[:LOCAL]", help="the job's port on its worker, and the port here (default: the same)")
         ] = None,
         background: Annotated[bool, typer.Option("--background", "-b", help="keep forwarding after p returns")
                               ] = False,
         show_list: Annotated[bool, typer.Option("--list", "-l", help="list the forwards running here")] = False,
         stop: Annotated[bool, typer.Option("--stop", help="end the forwards (of one local port or job, if named)")
                         ] = False,
         ) -> None:
    """Forward a port of a job's worker to localhost, through its SSH master, until Ctrl+C or the job ends."""
    from .commands.port import port as forward_port

    _done(forward_port(job, mapping, background, show_list, stop))


@app.command()
def sync(dry_run: Annotated[bool, typer.Option("--dry-run", help="list the files, largest first; send nothing")
                            ] = False,
         exclude: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
             "--exclude", metavar="PATTERN", help="also leave out PATTERN (gitignore syntax; repeatable)")] = None,
         ) -> None:
    """Show what a run from here would sync (.gitignore, .pignore and --exclude applied), largest first."""
    from .commands.sync import sync_preview

    _done(sync_preview(dry_run, exclude or []))


@app.command()
def doctor(fix: Annotated[bool, typer.Option("--fix", help="move damaged records to the quarantine folder")] = False,
           ) -> None:
    """List damaged job records in the local store; --fix moves them aside and rebuilds the index."""
    from .commands.doctor import doctor as check_store

    _done(check_store(fix))


@worker_app.command("register")
def worker_register(
    connection: Annotated[str, typer.Argument(help="user@host, user@host:port or an ssh_config alias")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="worker name (default: host)")] = None,  # noqa: UP045
    ssh_config: Annotated[Optional[str], typer.Option("--ssh-config", "-F",  # noqa: UP045
                                                      help="ssh_config file for this worker")] = None,
    default: Annotated[bool, typer.Option("--default", help="make it the default worker")] = False,
    scratch: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--scratch", help="keep its workdirs and spare copies under this directory on the worker")] = None,
    slurm: Annotated[bool, typer.Option("--slurm", help="a Slurm login node: jobs go to the cluster via sbatch")
                     ] = False,
    partition: Annotated[Optional[str], typer.Option(help="(--slurm) the partition of its jobs")] = None,  # noqa: UP045
    account: Annotated[Optional[str], typer.Option(help="(--slurm) the account its jobs are charged to")  # noqa: UP045
                       ] = None,
    sbatch_arg: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--sbatch-arg", help="(--slurm) an sbatch option for every job, e.g. --sbatch-arg=--qos=high")] = None,
    workdir_root: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--workdir-root", help="(--slurm) a shared filesystem the compute nodes see, for the workdirs "
        "(as --scratch)")] = None,
    slots: SlotsOpt = None,
    gpus: GpusOpt = None,
    pool: PoolOpt = None,
    require_approval: ApprovalOpt = None,
) -> None:
    """Register a worker: check it, detect its arch, install the agent."""
    from .commands.worker import Settings, register
    from .errors import PError

    if not slurm and (partition or account or sbatch_arg or workdir_root):
        raise PError("--partition, --account, --sbatch-arg and --workdir-root need --slurm", exit_code=2)
    if scratch is not None and workdir_root is not None:
        raise PError("--scratch and --workdir-root name the same place; give one", exit_code=2)
    settings = None
    if slurm:
        from .config import Worker

        settings = Worker("", "", partition=partition, account=account, sbatch_args=sbatch_arg or [])
    _done(register(connection, name, ssh_config, default, scratch or workdir_root, settings,
                   Settings(slots, gpus, pool or [], [], require_approval)))


@worker_app.command("ls")
def worker_ls(check: Annotated[bool, typer.Option("--check", "-c", help="probe each worker over SSH")] = False,
              as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (docs/json.md)")
                                 ] = False,
              ) -> None:
    """List registered workers: slots used, queue, GPUs free, drained (asked of each, in parallel)."""
    from .commands.worker import ls as list_workers

    _done(list_workers(check, as_json))


@worker_app.command("set")
def worker_set(name: WorkerArg,
               scratch: Annotated[Optional[str], typer.Option(  # noqa: UP045
                   "--scratch", help="keep workdirs and spare copies under this directory on the worker "
                   "(~/.p: back home); refused while jobs run")] = None,
               slots: SlotsOpt = None,
               gpus: GpusOpt = None,
               pool: PoolOpt = None,
               no_pool: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
                   "--no-pool", help="take it out of this pool (repeatable)")] = None,
               require_approval: ApprovalOpt = None,
               ) -> None:
    """Change a worker's settings, kept on the worker so every client agrees."""
    from .commands.worker import Settings, set_

    _done(set_(name, scratch, Settings(slots, gpus, pool or [], no_pool or [], require_approval)))


@worker_app.command("drain")
def worker_drain(names: Annotated[Optional[list[str]], typer.Argument(help="workers")] = None,  # noqa: UP045
                 every: Annotated[bool, typer.Option("--all", "-a", help="every registered worker")] = False,
                 ) -> None:
    """Stop a worker taking new jobs: queued ones wait, running ones finish (for every client)."""
    from .commands.worker import drain

    _done(drain(names or [], every, drained=True))


@worker_app.command("resume")
def worker_resume(names: Annotated[Optional[list[str]], typer.Argument(help="workers")] = None,  # noqa: UP045
                  every: Annotated[bool, typer.Option("--all", "-a", help="every registered worker")] = False,
                  ) -> None:
    """Let a drained worker take new jobs again; its queue moves on."""
    from .commands.worker import drain

    _done(drain(names or [], every, drained=False))


@worker_app.command("rm")
def worker_rm(name: WorkerArg) -> None:
    """Unregister a worker (refused while it has running jobs)."""
    from .commands.worker import rm as remove_worker

    _done(remove_worker(name))


@worker_app.command("clean")
def worker_clean(name: WorkerArg) -> None:
    """Remove all p keeps on a worker but its running jobs: finished jobs, workdirs, spare copies."""
    from .commands.worker import clean

    _done(clean(name))


@worker_app.command("default")
def worker_default(name: WorkerArg) -> None:
    """Set the default worker."""
    from .commands.worker import default as set_default

    _done(set_default(name))


def dispatch(argv: list[str]) -> int:
    """Run the app; usage errors become one line like every other error.

    Typer vendors its own click, so its exceptions are recognised by shape.
    """
    if argv[:2] == ["help", "agents"]:
        from .guide import AGENTS

        print(AGENTS, end="")
        return 0
    if argv[:1] == ["help"]:
        argv = [*argv[1:], "--help"]  # `p help`, `p help worker register`
    try:
        result = app(args=argv, prog_name="p", standalone_mode=False)
    except Exception as exc:
        kind = type(exc).__name__
        ctx = getattr(exc, "ctx", None)
        if kind == "Exit":
            return int(getattr(exc, "exit_code", 0))
        if kind == "Abort":
            return 130
        if kind == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            return 0
        if hasattr(exc, "format_message"):
            where = f"`{ctx.command_path} --help`" if ctx is not None else "`p --help`"
            message = exc.format_message().rstrip(".")
            print(f"p: {message[:1].lower()}{message[1:]} (see {where})", file=sys.stderr)
            return 2
        raise
    return result if isinstance(result, int) else 0
