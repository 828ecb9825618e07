"""The build's host-side bookkeeping runs on the snapshot alone.

`make agents` freezes a snapshot of the sources (build/lib.sh
snapshot_sources) and runs build/agents.py from it as `python3 -I -S`: no
site-packages, no PYTHONPATH. A file the snapshot lacks, or an import of
something outside the standard library, fails here on every machine rather
than only on a clean one (where `p` is not importable by accident).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A snapshot taken exactly as the build takes it."""
    done = subprocess.run(["bash", "-c", '. build/lib.sh && snapshot_sources "$PWD"'], cwd=REPO,
                          env={**os.environ, "P_BUILD_CACHE": str(tmp_path / "cache")},
                          capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


def agents_py(snapshot: Path, agents_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["P_AGENTS_DIR"] = str(agents_dir)
    return subprocess.run([sys.executable, "-I", "-S", str(snapshot / "build" / "agents.py"), *args],
                          cwd=snapshot, env=env, capture_output=True, text=True, check=False)


def test_every_subcommand_runs_on_the_snapshot_with_the_stdlib_alone(snapshot: Path, tmp_path: Path) -> None:
    from p import artifacts
    from p_protocol import VERSION

    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()

    def ok(*args: str) -> str:
        done = agents_py(snapshot, agents_dir, *args)
        assert done.returncode == 0, f"agents.py {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    from p_protocol.platforms import ARCHES

    assert ok("version") == VERSION
    assert ok("arches") == " ".join(ARCHES)
    assert ok("deb-arch", "aarch64") == "arm64"
    assert ok("binfmt", "riscv64").split()[0].endswith("\\x02\\x00\\xf3\\x00")
    assert agents_py(snapshot, agents_dir, "deb-arch", "mips").returncode != 0
    assert len(ok("sources-hash")) == 64
    # The build and the client name the agent's sources with one function.
    assert ok("agent-sources") == artifacts.sources_digest()
    arch = platform.machine()
    binary = agents_dir / f"p-agent-{arch}"
    shutil.copy2(shutil.which("true") or "/bin/true", binary)
    assert ok("elf-arch", str(binary)) == arch
    assert agents_py(snapshot, agents_dir, "is-fresh", arch).returncode == 1
    provenance = tmp_path / "build.json"
    provenance.write_text(json.dumps({"arch": arch, "suite": "debian trixie", "python": "3.13.5",
                                      "pyinstaller": "6.22.3", "staticx": "0.14.2"}))
    ok("record", arch, str(binary), str(provenance))
    entry = json.loads((agents_dir / "manifest.json").read_text())["agents"][arch]
    assert entry["suite"] == "debian trixie" and entry["python"] == "3.13.5"
    assert ok("is-fresh", arch) == ""
    table = ok("table", f"{arch}=rebuilt:42")
    assert arch in table and "rebuilt" in table and entry["sha256"][:12] in table


def test_a_snapshot_missing_a_module_fails_the_build(snapshot: Path, tmp_path: Path) -> None:
    """What the clean machine saw: a snapshot without the digest's module."""
    (snapshot / "p_protocol" / "sources.py").unlink()
    done = agents_py(snapshot, tmp_path, "agent-sources")
    assert done.returncode != 0
    assert "p_protocol.sources" in done.stderr
