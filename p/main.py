"""Entry point. The run form (`p [worker] [-n] [-d] [-e K=V]... -- cmd`) and `p ls` are
parsed here without typer, so the commands run most often import nothing
heavy; every other verb goes to the typer app in `cli`."""

from __future__ import annotations

import os
import sys

from .errors import PError, Terminated
from .verbs import RUN_FLAGS, RUN_VALUE_FLAGS, RUN_VALUE_USAGE, RUN_WORKER_FLAGS, VERBS


def parse_run(argv: list[str]) -> dict[str, object] | None:
    """The run form's options, or None when argv is another verb. Flags with
    a value (RUN_VALUE_FLAGS) add ``"job_spec"``: (flag's name, value) pairs
    in command-line order, which `commands.run` turns into the JobSpec."""
    if "--" not in argv:
        return None
    split = argv.index("--")
    head, words = argv[:split], argv[split + 1:]
    options: dict[str, object] = {"worker": None, "no_sync": False, "detach": False, "assume_yes": False,
                                  "dry_run_sync": False, "ctrl_c_detaches": False, "notify": False,
                                  "words": words}
    spec: list[tuple[str, str]] = []
    args = iter(head)
    for arg in args:
        flag, equals, value = arg.partition("=")
        if arg in RUN_WORKER_FLAGS or flag == "--worker" and equals:
            worker = value if equals else next(args, None)
            if not worker or options["worker"] is not None:
                raise PError(f"{flag} needs one worker or @pool, given once; usage: p [-w WORKER|@POOL] "
                             "-- <command>", exit_code=2)
            options["worker"] = worker
        elif arg.startswith("--") and equals and flag in RUN_VALUE_FLAGS:
            spec.append((RUN_VALUE_FLAGS[flag], value))  # --env=K=V
        elif arg in RUN_VALUE_FLAGS:
            value = next(args, None)  # type: ignore[arg-type]
            if value is None:
                raise PError(f"{arg} needs a value; usage: p [worker] {RUN_VALUE_USAGE[RUN_VALUE_FLAGS[arg]]} "
                             "-- <command>", exit_code=2)
            spec.append((RUN_VALUE_FLAGS[arg], value))
        elif arg[:2] in _SHORT_VALUE_FLAGS and len(arg) > 2:
            spec.append((RUN_VALUE_FLAGS[arg[:2]], arg[2:]))  # -eK=V, -g2, as getopt reads them
        elif arg in RUN_FLAGS:
            options[RUN_FLAGS[arg]] = True
        elif arg == "--debug":
            continue
        elif arg.startswith("-") and len(arg) > 2 and arg[1] != "-" and set(arg[1:]) <= {"n", "d", "y"}:
            for letter in arg[1:]:
                options[RUN_FLAGS["-" + letter]] = True
        elif arg.startswith("-") or arg in VERBS or options["worker"] is not None:
            return None
        else:
            options["worker"] = arg
    if spec:
        options["job_spec"] = spec
    return options


_SHORT_VALUE_FLAGS = {flag for flag in RUN_VALUE_FLAGS if len(flag) == 2}


def parse_ls(argv: list[str]) -> dict[str, bool] | None:
    """`p ls` is run often and must be quick: it skips typer too."""
    if not argv or argv[0] != "ls":
        return None
    flags = {"--json": "as_json", "--refresh": "refresh", "-r": "refresh", "--all": "show_all", "-a": "show_all",
             "--wide": "wide", "-w": "wide"}
    options = {"as_json": False, "refresh": False, "show_all": False, "wide": False}
    for arg in argv[1:]:
        if arg == "--debug":
            continue
        if arg not in flags:
            return None  # --help, typos: typer explains
        options[flags[arg]] = True
    return options


def _cwd_problem() -> str | None:
    """Why the current directory cannot be used, if it cannot: the shell
    keeps a directory that was deleted (or made unreadable) under it."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        return "the current directory no longer exists; cd to one that does"
    except OSError as exc:
        return f"the current directory cannot be read ({exc.strerror}); cd to another one"
    if not os.access(cwd, os.R_OK | os.X_OK):
        return f"the current directory {cwd} cannot be read; cd to another one"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "_P_COMPLETE" in os.environ:
        # A shell asks what Tab offers: most answers need no typer (startup).
        from .completion import answer

        reply = answer(os.environ["_P_COMPLETE"])
        if reply is not None:
            print(reply)
            return 0
    debug = "--debug" in (argv[: argv.index("--")] if "--" in argv else argv)
    try:
        options = parse_run(argv)
        if options is not None:
            problem = _cwd_problem()
            if problem is not None:
                raise PError(problem, exit_code=2)
            if not options["no_sync"] and not options["dry_run_sync"]:
                from . import manifest

                manifest.walk_early(os.getcwd())  # while the rest is imported (p/manifest.py)
            import signal

            from .commands.run import run
            from .errors import raise_terminated

            signal.signal(signal.SIGTERM, raise_terminated)

            return run(options["worker"], options["words"],  # type: ignore[arg-type]
                       no_sync=bool(options["no_sync"]), detach=bool(options["detach"]),
                       assume_yes=bool(options["assume_yes"]), dry_run_sync=bool(options["dry_run_sync"]),
                       ctrl_c_detaches=bool(options["ctrl_c_detaches"]), notify=bool(options["notify"]),
                       job_spec=options.get("job_spec", []))  # type: ignore[arg-type]
        ls_options = parse_ls(argv)
        if ls_options is not None:
            from .commands.ls import ls

            return ls(**ls_options)
        from .cli import dispatch

        return dispatch(argv)
    except PError as exc:
        if debug:
            import traceback  # only here: 3 ms of every command's start otherwise

            traceback.print_exc()
        print(f"p: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:
        # stdout's reader is gone: stop Python complaining when it flushes.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        problem = _cwd_problem()
        if problem is not None:  # what the failure most likely came from
            print(f"p: {problem}", file=sys.stderr)
            return 2
        print(f"p: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return 70


def entry() -> None:
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = 141  # as main says when the reader left before it returned
    # Python's teardown frees every module and object one by one: ~4 ms of
    # each quick command, for nothing (files are closed by now, the streams
    # flushed above, every thread of p's is a daemon). Not when another
    # thread still runs, which a normal exit would wait for.
    threading = sys.modules.get("threading")
    if threading is None or all(thread.daemon for thread in threading.enumerate()
                                if thread is not threading.main_thread()):
        os._exit(code)
    sys.exit(code)
