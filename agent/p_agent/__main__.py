"""Command line of p-agent; the client runs it, users never need to."""

from __future__ import annotations

import argparse
import os
import sys

from p_protocol import VERSION, Layout


def default_home() -> str:
    return os.environ.get("P_AGENT_HOME") or os.path.join(os.path.expanduser("~"), ".p")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p-agent", description="Worker side of p.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve requests on ~/.p/run/agent-<version>.sock")
    serve.add_argument("--detach", action="store_true", help="run in the background")
    serve.add_argument("--home", default=None, help="state directory (default ~/.p)")
    commands.add_parser("version", help="print the version")
    commands.add_parser("selftest", help="run one job through tmux and check it")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(VERSION)
        return 0
    if args.command == "selftest":
        from .selftest import selftest

        return selftest()
    from .daemon import serve as serve_forever

    return serve_forever(Layout(args.home or default_home()), args.detach)


if __name__ == "__main__":
    sys.exit(main())
