"""Command line of p-agent; the client runs it, users never need to."""

from __future__ import annotations

import argparse
import os
import sys

from p_protocol import ENGINES, PROTOCOL, VERSION
from p_protocol.layout import Layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p-agent", description="Worker side of p.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve requests on ~/.p/run/agent-<version>.sock")
    serve.add_argument("--detach", action="store_true", help="run in the background")
    serve.add_argument("--engine", choices=ENGINES, default=ENGINES[0], help="what runs the jobs")
    serve.add_argument("--unpack-to", default=None, metavar="DIR",
                       help="a frozen agent: also unpack itself to DIR for faster later starts")
    serve.add_argument("--sha256", default="", help="the sha256 of this binary, recorded in DIR")
    version = commands.add_parser("version", help="print the version")
    version.add_argument("--verbose", "-v", action="store_true", help="also how this agent was built")
    commands.add_parser("selftest", help="run one job through tmux and check it")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(VERSION)
        if args.verbose:
            for key, value in provenance().items():
                print(f"{key}: {value}")
        return 0
    if args.command == "selftest":
        from .selftest import selftest

        return selftest()
    from .daemon import serve as serve_forever

    unpack_to = (args.unpack_to, args.sha256) if args.unpack_to and args.sha256 else None
    return serve_forever(Layout(os.path.join(os.path.expanduser("~"), ".p")), args.engine, args.detach, unpack_to)


def provenance() -> dict[str, str]:
    """What `make agents` recorded at the freeze, and this binary's sha256."""
    info: dict[str, str] = {"protocol": str(PROTOCOL), "python": sys.version.split()[0],
                            "machine": os.uname().machine}
    try:
        from p_agent_build import INFO  # written by build/freeze.sh
    except ImportError:
        info["built"] = "from source"
        return info
    info.update({key: str(value) for key, value in INFO.items()})
    from .unpack import COMPLETE

    binary = os.environ.get("STATICX_PROG_PATH")
    if binary:
        import hashlib

        with open(binary, "rb") as src:
            info["sha256"] = hashlib.sha256(src.read()).hexdigest()
    else:
        try:  # running unpacked: the unpack recorded the binary's sha256
            with open(os.path.join(os.path.dirname(sys.executable), COMPLETE)) as mark:
                info["sha256"] = mark.read().strip() + " (unpacked)"
        except OSError:
            info["sha256"] = "unknown"
    return info


def run() -> None:
    """main(), then leave without the interpreter's finalization: a daemon
    thread (the memory sampler, a request's) that wakes during it would
    call pthread_exit, which a static agent cannot (glibc looks for
    libgcc_s.so.1 to unwind, and the binary has none) and aborts. All that
    matters is on disk by then: only the standard streams are flushed."""
    try:
        code = main()
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
