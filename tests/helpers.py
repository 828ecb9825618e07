"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failed `p` must say one line on stderr, no traceback."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("p: ")
    return lines[0]


def eventually(check: Callable[[], object], timeout: float = 20.0, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def job_dir(worker_home: Path, job_id: str) -> Path:
    return worker_home / ".p" / "jobs" / job_id


def workdir(worker_home: Path, job_id: str) -> Path:
    return worker_home / ".p" / "workdirs" / job_id
