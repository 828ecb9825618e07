"""What a job carries besides its command: environment variables and secrets.

One definition for both sides. The client reads ``-e K=V``, ``--env-file``
(``parse_env_file``) and ``--secret NAME``; the ``start`` request carries
``env`` and ``secrets`` as objects of names to values (over the agent's unix
socket, never in an argv); the agent writes each as a 0600 file in the job
directory (``env_script``), which the job's script sources just before the
command runs. Secrets have a file of their own, deleted as soon as it is
read (and at the latest when the job ends or is stopped); the client's
record keeps env names and values, and only the names of secrets.
"""

from __future__ import annotations

import re
from shlex import quote

# Names a POSIX shell can export. Anything else could not be set by `export`
# and might be read as shell syntax.
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_env(value: object) -> bool:
    """An object of valid names to string values (the wire's ``env`` kind)."""
    return isinstance(value, dict) and all(
        isinstance(name, str) and ENV_NAME_RE.match(name) is not None and isinstance(text, str)
        and "\0" not in text for name, text in value.items())


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
