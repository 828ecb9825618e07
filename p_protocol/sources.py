"""The name of the agent's source: one digest that the client and the build
both compute, so a frozen agent built from other sources is never installed.

Stdlib only: `build/agents.py` runs it with `python3 -I -S` from a snapshot of
the sources, and the client imports it from its installed package.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

# (package name, directory) pairs; the digest covers each one's top-level *.py.
Roots = list[tuple[str, str]]


def sha256(data: bytes = b"") -> Any:
    """A SHA-256 hash object, from CPython's own module where there is one:
    hashlib loads OpenSSL first, ~2 ms of a client's start, for the few
    bytes hashed here and in the client's short names (p/paths.py). Big
    data goes to hashlib, which is faster at it."""
    try:
        from _sha2 import sha256 as new  # Python 3.12 and later
    except ImportError:
        try:
            from _sha256 import sha256 as new  # type: ignore[no-redef]  # Python 3.9 to 3.11
        except ImportError:  # a Python built without it
            from hashlib import sha256 as new  # type: ignore[no-redef]
    return new(data)


def digest_sources(roots: Roots) -> str:
    digest = sha256()
    for package, root in roots:
        for name in sorted(os.listdir(root)):
            if name.endswith(".py"):
                with open(os.path.join(root, name), "rb") as src:
                    data = src.read()
                digest.update(f"{package}/{name}".encode() + b"\0" + sha256(data).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def agent_roots(agent_dir: str, protocol_dir: str) -> Roots:
    """The packages a frozen agent is built from, in digest order."""
    return [("p_agent", agent_dir), ("p_protocol", protocol_dir)]
