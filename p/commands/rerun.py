"""`p rerun <id> [--same-files] [-d] [-y]`: a new job like an earlier one.

The same command, worker and spec (env, secret names, timeout, cap,
resources, `--pull` paths: the JobSpec in its record; its `--exclude`
patterns), started through the
run form's own path (`run.launch`). Secrets' values are read again, as for
`--secret`: no record holds them. The current directory is synced, as a run
from here would; `--same-files` copies the earlier job's workdir on the
worker instead (its files as that job left them).
"""

from __future__ import annotations

from p_protocol.jobspec import JobSpec

from ..store import Store
from .run import launch, secret_values


def rerun(job: str, same_files: bool, detach: bool, assume_yes: bool) -> int:
    earlier = Store().find(job)
    spec = JobSpec(**earlier.spec.to_json())
    secrets = secret_values(spec.secrets)  # before any connection, as the run form
    # Placed from a pool: placed again (`--same-files` copies the old
    # workdir, which is on its worker only).
    target = f"@{earlier.pool}" if earlier.pool is not None and not same_files else earlier.worker
    return launch(target, spec, secrets, no_sync=not earlier.synced, detach=detach,
                  assume_yes=assume_yes, excludes=earlier.excludes, same_files_as=earlier if same_files else None,
                  rerun_of=earlier.id)
