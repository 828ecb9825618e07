"""`p approve [<id>]`: let a job pending approval run; without an id, list
the jobs pending approval on every worker."""

from __future__ import annotations

from ..approval import decide, list_pending


def approve(job: str | None) -> int:
    return list_pending() if job is None else decide(job, approved=True)
