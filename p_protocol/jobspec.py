"""A job's specification: what it runs and with what, defined once.

``JobSpec`` is what the run form asks for (p/main.py, p/commands/run.py),
what the ``start`` request carries (as its ``spec`` field), what the agent
keeps in the job directory (``spec.json``), what the client's record holds
and what `p show` prints; ``FIELDS`` declares each field's wire kind
(p_protocol.wire.KINDS) and default, and every reader checks against it.

Environment and secrets: the client reads ``-e K=V``, ``--env-file``
(``parse_env_file``) and ``--secret NAME``. The spec holds env names and
values and only the *names* of secrets; their values travel beside it in
the ``start`` request (over the agent's unix socket, never in an argv), and
the agent writes each set as a 0600 file in the job directory
(``env_script``), which the job's script sources just before the command
runs. The secrets file is deleted as soon as it is read (and at the latest
when the job ends or is stopped).
"""

from __future__ import annotations

import re
from shlex import quote

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

# Names a POSIX shell can export. Anything else could not be set by `export`
# and might be read as shell syntax.
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_env(value: object) -> bool:
    """An object of valid names to string values (the wire's ``env`` kind)."""
    return isinstance(value, dict) and all(
        isinstance(name, str) and ENV_NAME_RE.match(name) is not None and isinstance(text, str)
        and "\0" not in text for name, text in value.items())


def is_names(value: object) -> bool:
    """A list of distinct variable names (the wire's ``names`` kind)."""
    return isinstance(value, list) and len(set(value)) == len(value) and all(
        isinstance(name, str) and ENV_NAME_RE.match(name) is not None for name in value)


REQUIRED = object()
# Each field: (name, wire kind, default). A default of None means "not
# asked for" (the engine's own behaviour); the agent refuses a field its
# engine cannot honour rather than ignore it.
FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("command", "str", REQUIRED),  # run by the user's login shell, as ssh runs it
    ("env", "env", {}),  # -e, --env-file: names to values
    ("secrets", "names", []),  # --secret: names only
    ("timeout", "duration", None),  # --timeout: seconds, then SIGTERM, SIGKILL after the grace
    ("max_output", "positive", None),  # --max-output: output.log stops growing here
    ("gpus", "count", 0),  # -g: how many of the worker's GPUs
    ("cpus", "positive", None),  # --cpus (Slurm)
    ("mem", "positive", None),  # --mem: bytes (Slurm)
    ("nodes", "positive", None),  # --nodes (Slurm): the command runs under srun on each
    ("sbatch_args", "strs", []),  # --sbatch-arg (Slurm), passed through as given
    ("pull", "strs", []),  # --pull: paths copied back from the workdir when the job ends
)
FIELD_NAMES = tuple(name for name, _, _ in FIELDS)


class JobSpec:
    """A job's specification (see FIELDS); a plain class for startup time."""

    __slots__ = FIELD_NAMES
    command: str
    env: dict[str, str]
    secrets: list[str]
    timeout: float | None
    max_output: int | None
    gpus: int
    cpus: int | None
    mem: int | None
    nodes: int | None
    sbatch_args: list[str]
    pull: list[str]

    def __init__(self, command: str, **fields: Any) -> None:
        self.command = command
        for name, _, default in FIELDS[1:]:
            value = fields.pop(name, default)
            setattr(self, name, value.copy() if isinstance(value, (dict, list)) else value)
        if fields:
            raise TypeError(f"unknown job spec fields: {', '.join(fields)}")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_NAMES}

    @classmethod
    def parse(cls, data: object, what: str = "job spec") -> JobSpec:
        """``data`` held to FIELDS, or a ProtocolError naming the field.
        Absent or null fields take their defaults."""
        from . import ProtocolError
        from .wire import SPEC, check_fields

        if not isinstance(data, dict):
            raise ProtocolError(f"{what}: not a JSON object")
        checked = check_fields(SPEC, data, what)
        return cls(**{name: value for name, value in checked.items() if value is not None})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobSpec) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"JobSpec({self.to_json()!r})"


# --timeout 90s, 15m, 2h, 1h30m, or bare seconds.
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)(?:i?B)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``2h``, ``1h30m`` or ``45``; ValueError
    for anything else or for no time at all."""
    match = _DURATION_RE.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration (like 90s, 15m, 2h, 1h30m)")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    return total


def parse_size(text: str) -> int:
    """Bytes in ``10M``, ``512K``, ``2G``, ``1.5GiB`` or ``4096`` (powers of
    1024, as Slurm and most tools count memory); ValueError otherwise."""
    match = _SIZE_RE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (like 512K, 10M, 2G)")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    if size <= 0:
        raise ValueError(f"{text!r}: a size must be more than zero")
    return size


def env_script(env: dict[str, str]) -> str:
    """``env`` as `export NAME='value'` lines a POSIX sh sources: every value
    single-quoted (shlex.quote), so no part of it is ever evaluated."""
    return "".join(f"export {name}={quote(text)}\n" for name, text in env.items())


class EnvFileError(ValueError):
    """A line of an env file that is not ``[export ]NAME=VALUE``."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


def parse_env_file(text: str) -> dict[str, str]:
    """dotenv syntax: ``NAME=VALUE`` lines, ``#`` comments, blank lines, an
    optional ``export ``, values bare (a `` #`` starts a comment), in single
    quotes (literal) or double quotes (``\\n``, ``\\"``, ``\\\\`` escapes)."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        name, equals, value = line.partition("=")
        name = name.rstrip()
        if not equals:
            raise EnvFileError(number, f"expected NAME=VALUE, found {_shown(raw)}")
        if not ENV_NAME_RE.match(name):
            raise EnvFileError(number, f"{_shown(name)} is not a valid variable name")
        env[name] = _value(value.lstrip(), number)
    return env


def _value(text: str, number: int) -> str:
    if not text or text[0] not in "'\"":
        comment = re.search(r"\s#", text)
        return (text[: comment.start()] if comment else text).rstrip()
    quote_char = text[0]
    value: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == quote_char:
            rest = text[index + 1:].strip()
            if rest and not rest.startswith("#"):
                raise EnvFileError(number, f"unexpected text after the closing quote: {_shown(rest)}")
            return "".join(value)
        if char == "\\" and quote_char == '"' and index + 1 < len(text):
            following = text[index + 1]
            value.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(following, "\\" + following))
            index += 2
            continue
        value.append(char)
        index += 1
    raise EnvFileError(number, f"the quote {quote_char} is not closed on this line")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:39] + "…")


# A Slurm partition or account name, as `p worker register --slurm` keeps it.
SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


def sbatch_arg_problem(arg: str) -> str | None:
    """Why ``arg`` cannot go to sbatch as one word, or None. Options only:
    a word without a dash would be taken for the batch script."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return f"{arg!r} is not an sbatch option (write --sbatch-arg=--option=value)"
    if any(not char.isprintable() for char in arg):
        return f"{arg!r}: an sbatch option must be one line of printable text"
    return None
