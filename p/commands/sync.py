"""`p sync --dry-run [--exclude PATTERN]...`: what a run from here would
sync, largest first; nothing is sent and no worker is asked."""

from __future__ import annotations

import os

from .. import sync
from ..errors import PError


def sync_preview(dry_run: bool, excludes: list[str]) -> int:
    if not dry_run:
        # Every run syncs by itself, into its own workdir: there is nothing
        # to sync ahead of one.
        raise PError("p sync only shows what a run would sync: add --dry-run (every `p -- cmd` syncs by itself)",
                     exit_code=2)
    return sync.print_plan(os.getcwd(), excludes)
