"""The name of the agent's source: one digest that the client and the build
both compute, so a frozen agent built from other sources is never installed.

Stdlib only: `build/agents.py` runs it with `python3 -I -S` from a snapshot of
the sources, and the client imports it from its installed package.
"""

from __future__ import annotations

import hashlib
import os

# (package name, directory) pairs; the digest covers each one's top-level *.py.
Roots = list[tuple[str, str]]


def digest_sources(roots: Roots) -> str:
    digest = hashlib.sha256()
    for package, root in roots:
        for name in sorted(os.listdir(root)):
            if name.endswith(".py"):
                with open(os.path.join(root, name), "rb") as src:
                    data = src.read()
                digest.update(f"{package}/{name}".encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def agent_roots(agent_dir: str, protocol_dir: str) -> Roots:
    """The packages a frozen agent is built from, in digest order."""
    return [("p_agent", agent_dir), ("p_protocol", protocol_dir)]
