"""`.pignore` and `--exclude`: gitignore syntax, turned into rsync filter rules.

rsync reads `.gitignore` itself (a per-directory merge), but its own rule
syntax differs from gitignore's where it matters: the first matching rule
wins (in gitignore the last), `!` does not re-include, and a pattern with a
slash inside matches at any depth (in gitignore it is anchored). So the
synced directory's `.pignore` and the `--exclude` patterns are translated
here, line by line, into rules that rsync reads before `.gitignore`'s:
a `!pattern` there may re-include what `.gitignore` leaves out.
"""

from __future__ import annotations

import os

PIGNORE = ".pignore"


class PignoreError(ValueError):
    """A `.pignore` that cannot be read: the file and why."""


def read_pignore(source_dir: str) -> list[str]:
    """The patterns of ``source_dir``'s `.pignore` (none if it has none)."""
    path = os.path.join(source_dir, PIGNORE)
    try:
        with open(path, encoding="utf-8") as src:
            return src.read().splitlines()
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise PignoreError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise PignoreError(f"cannot read {path}: {exc.strerror}") from None


def rsync_rules(patterns: list[str]) -> list[str]:
    """rsync `--filter` arguments for gitignore ``patterns`` (the later
    wins, as in gitignore: so they are given to rsync last first)."""
    rules: list[str] = []
    for line in reversed(patterns):
        parsed = _parse(line)
        if parsed is None:
            continue
        include, pattern = parsed
        sign = "+" if include else "-"
        rules += [f"--filter={sign} {variant}" for variant in _variants(pattern)]
    return rules


def _parse(line: str) -> tuple[bool, str] | None:
    """(re-included?, pattern) of one gitignore line; None for blanks and comments."""
    if line.startswith("#"):
        return None
    # Trailing spaces go unless escaped with a backslash.
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        stripped += " "
    include = stripped.startswith("!")
    if include:
        stripped = stripped[1:]
    elif stripped.startswith(("\\!", "\\#")):
        stripped = stripped[1:]
    if not stripped or stripped == "/":
        return None
    return include, stripped


def _variants(pattern: str) -> list[str]:
    """The rsync patterns that match what gitignore's ``pattern`` does."""
    directory_only = pattern.endswith("/")
    body = pattern.rstrip("/")
    # A slash before the end anchors the pattern at the synced directory.
    if "/" in body and not body.startswith("**/"):
        body = "/" + body.lstrip("/")
    variants = [body]
    # `a/**/b` also matches `a/b`; rsync's `**` needs a directory there.
    if "/**/" in body:
        variants.append(body.replace("/**/", "/"))
    if body.startswith("**/"):
        variants.append(body[3:])
    return [variant + ("/" if directory_only else "") for variant in variants]
