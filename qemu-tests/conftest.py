"""Shared fixtures of the QEMU tests (run as root after `make agents`).

`P_ARCHES` (comma-separated, as for build/build-agents.sh; default all
three) limits which architectures are tested, e.g. one per CI matrix job.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
AGENTS_DIR = REPO / "p" / "agents"
HOST_ARCH = platform.machine()

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from worker import Worker, start_worker  # noqa: E402

from p_protocol.platforms import ARCHES as ALL_ARCHES  # noqa: E402


def selected_arches() -> list[str]:
    wanted = os.environ.get("P_ARCHES", "")
    arches = [a.strip() for a in wanted.split(",") if a.strip()] or list(ALL_ARCHES)
    unknown = sorted(set(arches) - set(ALL_ARCHES))
    if unknown:
        raise pytest.UsageError(f"P_ARCHES: unknown arch {unknown}; known: {ALL_ARCHES}")
    return arches


def foreign_arches() -> list[str]:
    return [a for a in selected_arches() if a != HOST_ARCH]


def version() -> str:
    text = (REPO / "p_protocol" / "__init__.py").read_text()
    match = re.search(r'^VERSION\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match, "p_protocol defines no VERSION"
    return match.group(1)


def manifest() -> dict[str, object]:
    path = AGENTS_DIR / "manifest.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make agents` first")
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def agent_binary(arch: str) -> Path:
    entry = manifest()["agents"].get(arch)  # type: ignore[union-attr]
    if not entry:
        pytest.fail(f"no p-agent for {arch} in {AGENTS_DIR}/manifest.json: run `make agents`")
    path = AGENTS_DIR / entry["file"]
    assert path.is_file(), f"{path} listed in the manifest but missing"
    return path


@pytest.fixture(scope="session", autouse=True)
def _root_and_binfmt() -> None:
    if os.geteuid() != 0:
        pytest.skip("qemu-tests need root (chroot, mount, binfmt_misc)")


def require_fresh(arch: str) -> None:
    """The client installs only binaries built from its own agent sources."""
    done = subprocess.run([sys.executable, "-I", "-S", str(REPO / "build" / "agents.py"), "is-fresh", arch],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"p/agents/p-agent-{arch} is stale (agent sources changed since it was built): "
                    "run `make agents`")


@pytest.fixture(scope="module")
def foreign_worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A Python-less worker of arch `request.param`: ssh_config + Host alias."""
    arch: str = request.param
    require_fresh(arch)
    scratch = tmp_path_factory.mktemp(f"worker-{arch}")
    with start_worker(arch, scratch) as worker:
        yield worker
