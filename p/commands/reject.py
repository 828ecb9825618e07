"""`p reject <id>`: end a job pending approval without running it."""

from __future__ import annotations

from ..approval import decide


def reject(job: str) -> int:
    return decide(job, approved=False)
