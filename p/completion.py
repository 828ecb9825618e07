"""Shell completion: what Tab offers, from local files only (no network).

The shells run typer's own scripts (`p --install-completion`,
`p --show-completion`), which call `p` with `_P_COMPLETE` set. Typer
answers those calls itself, with the candidates below as its
`autocompletion` callbacks; but importing typer costs more than the whole
answer may (100 ms with 10,000 jobs), so `p/main.py` first offers the call
to ``answer``, which speaks typer's protocol for the common cases (a job
id, a worker name, the run form's worker) without importing it, and
leaves the rest (options, subcommands) to typer.

Job ids come from the store's index (`jobs.index.json`), read as text:
only lines whose id matches are parsed, so 10,000 jobs cost a few
milliseconds. Worker names and `@pools` come from the config. `p pull`'s
paths complete from the local side only (the worker is never asked): the
answer is empty, which makes each shell complete file names here.
"""

from __future__ import annotations

import json
import os
import re

from . import paths
from .verbs import RUN_FLAGS, RUN_VALUE_FLAGS, VERBS

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

# Verbs whose first argument is a job; and the options of each that take a
# value (their value is not the job).
JOB_VERBS = {"attach": (), "logs": (), "wait": ("--pull",), "show": (), "events": (), "rerun": (),
             "stop": ("--grace", "-t"), "pull": (), "rm": (), "port": ()}
WORKER_VERBS = ("rm", "default", "set", "clean")  # `p worker VERB NAME`
INDEX_LINE_RE = re.compile(rb'^\{"id":"([0-9a-f]{32})"')
# Enough for any screen; the newest come first.
MAX_JOBS = 200


def job_candidates(incomplete: str) -> list[tuple[str, str]]:
    """Jobs whose id starts with ``incomplete``, newest first: (short id,
    what it runs). Ids are offered as `p ls` shows them (8 digits), in
    full where two jobs share those."""
    wanted = incomplete.lower().removeprefix("p-").encode()
    found: list[tuple[str, str]] = []
    for job_id, line in _index_lines():
        if job_id.startswith(wanted):
            found.append((job_id.decode(), _about(line)))
            if len(found) >= MAX_JOBS:
                break
    shorts = [job_id[:8] for job_id, _ in found]
    return [(job_id[:8] if shorts.count(job_id[:8]) == 1 else job_id, about) for job_id, about in found]


def _index_lines() -> list[tuple[bytes, bytes]]:
    """(id, record line) of every job in the index, newest first; nothing
    when there is no index (completion never writes one)."""
    try:
        with open(os.path.join(paths.data_dir(), "jobs.index.json"), "rb") as src:
            lines = src.read().split(b"\n")[1:]  # the header first
    except OSError:
        return []
    found = []
    for line in reversed(lines):
        match = INDEX_LINE_RE.match(line)
        if match:
            found.append((match[1], line))
    return found


def _about(line: bytes) -> str:
    """A job's description: its state and command (untrusted text: checked)."""
    try:
        record = json.loads(line)
    except ValueError:
        return ""
    command, status = record.get("command"), record.get("status")
    if not isinstance(command, str) or not isinstance(status, str):
        return ""
    command = " ".join(command.split())
    return f"{status}: {command[:57] + '…' if len(command) > 58 else command}"


def worker_candidates(incomplete: str) -> list[tuple[str, str]]:
    """Registered workers starting with ``incomplete``, from the config."""
    return _workers(incomplete, pools=False)


def _workers(incomplete: str, pools: bool) -> list[tuple[str, str]]:
    """Registered workers (and, where a worker may be named by its pool,
    `@pools`) starting with ``incomplete``, from the config."""
    from . import config

    try:
        loaded = config.load()
    except Exception:  # noqa: BLE001 - a broken config completes nothing; p says why when run
        return []
    found = [(worker.name, worker.connection) for worker in loaded.workers]
    if pools:
        found += [(f"@{name}", "pool") for name in _pool_names(loaded)]
    return [(name, about) for name, about in found if name.startswith(incomplete)]


def _pool_names(loaded: Any) -> list[str]:
    """The pools the config names (its workers' `pools:`), and `all`."""
    from .config import ALL_POOL

    names = [ALL_POOL]
    for worker in loaded.workers:
        names += [pool for pool in worker.pools if pool not in names]
    return names


# -- answering typer's completion calls without typer ------------------------

def answer(shell_var: str) -> str | None:
    """The answer to one of typer's completion calls (``shell_var``: the
    value of `_P_COMPLETE`), or None when typer must answer it."""
    shell = shell_var.removeprefix("complete_")
    if shell not in ("bash", "zsh", "fish"):
        return None
    args, incomplete = _words(shell)
    if incomplete.startswith("-"):
        return None  # options: typer knows them
    candidates = _candidates(args, incomplete)
    if candidates is None:
        return None
    return _format(shell, candidates)


def _words(shell: str) -> tuple[list[str], str]:
    """The words before the one being completed, and that one, as typer's
    completion classes read them from the environment."""
    import shlex

    def split(text: str) -> list[str]:
        lexer = shlex.shlex(text, posix=True)
        lexer.whitespace_split, lexer.commenters = True, ""
        words: list[str] = []
        try:
            words.extend(lexer)
        except ValueError:
            words.append(lexer.token)  # an unclosed quote: the partial word
        return words

    if shell == "bash":
        words = split(os.environ.get("COMP_WORDS", ""))
        cword = int(os.environ.get("COMP_CWORD", "0") or 0)
        return words[1:cword], words[cword] if cword < len(words) else ""
    text = os.environ.get("_TYPER_COMPLETE_ARGS", "")
    words = split(text)[1:]
    if words and not text.endswith(" "):
        return words[:-1], words[-1]
    return words, ""


def _candidates(args: list[str], incomplete: str) -> list[tuple[str, str]] | None:
    """What to offer after ``args``; None: typer decides."""
    if not args or _only_run_flags(args):
        # `p <Tab>`, `p -d <Tab>`: the run form's worker, or a verb.
        verbs = [(verb, "") for verb in VERBS if verb.startswith(incomplete)] if not args else []
        return verbs + _workers(incomplete, pools=True)
    verb, rest = args[0], args[1:]
    if verb == "worker" and len(rest) == 1 and rest[0] in WORKER_VERBS:
        return worker_candidates(incomplete)
    if verb in JOB_VERBS:
        positional = _positional(rest, JOB_VERBS[verb])
        if positional is None:
            return None
        if positional == 0:
            return job_candidates(incomplete)
        if verb == "pull":
            return []  # its paths: files here, by the shell's own completion
    return None


def _only_run_flags(args: list[str]) -> bool:
    """Whether ``args`` are run-form flags only (their values included)."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in RUN_VALUE_FLAGS:
            index += 2
            continue
        if arg not in RUN_FLAGS and not (arg.startswith("--") and arg.partition("=")[0] in RUN_VALUE_FLAGS):
            return False
        index += 1
    return index == len(args)


def _positional(rest: list[str], value_options: tuple[str, ...]) -> int | None:
    """How many arguments come before the word being completed (None: the
    word is an option's value)."""
    count, expect_value = 0, False
    for arg in rest:
        if expect_value:
            expect_value = False
        elif arg in value_options:
            expect_value = True
        elif not arg.startswith("-"):
            count += 1
    return None if expect_value else count


def _format(shell: str, candidates: list[tuple[str, str]]) -> str:
    """Typer's output for each shell (typer._completion_classes)."""
    if shell == "bash":
        return "\n".join(value for value, _ in candidates)
    if shell == "fish":
        action = os.environ.get("_TYPER_COMPLETE_FISH_ACTION", "")
        if action == "is-args":
            raise SystemExit(0 if candidates else 1)  # 1: let fish complete file names
        return "\n".join(f"{value}\t{' '.join(about.split())}" if about else value for value, about in candidates)

    def escape(text: str) -> str:
        return (text.replace('"', '""').replace("'", "''").replace("$", "\\$").replace("`", "\\`")
                .replace(":", r"\\:"))

    if not candidates:
        return "_files"
    items = "\n".join(f'"{escape(value)}":"{escape(about)}"' if about else f'"{escape(value)}"'
                      for value, about in candidates)
    return f"_arguments '*: :(({items}))'"
