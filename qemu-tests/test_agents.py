"""Each frozen p-agent runs under qemu-user with no sysroot and passes its
self-test (a real job through tmux: output captured, exit status recorded).

Foreign binaries run twice: through binfmt_misc (as a worker would exec
them) and explicitly through `qemu-<arch>-static`.  The host's native tmux
serves the self-test; binfmt lets the emulated agent exec it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST_ARCH, agent_binary, manifest, selected_arches, version

TIMEOUT = 600


def launchers(arch: str) -> list[str]:
    if arch == HOST_ARCH:
        return ["native"]
    return ["binfmt", "qemu-static"]


CASES = [(arch, how) for arch in selected_arches() for how in launchers(arch)]


def command(arch: str, how: str, *args: str, binary_path: Path | None = None) -> list[str]:
    binary = str(binary_path or agent_binary(arch))
    if how == "qemu-static":
        qemu = shutil.which(f"qemu-{arch}-static")
        if qemu is None:
            pytest.fail(f"qemu-{arch}-static not installed (apt-get install qemu-user-static)")
        return [qemu, binary, *args]
    if how == "binfmt" and not Path(f"/proc/sys/fs/binfmt_misc/qemu-{arch}").exists():
        pytest.fail(f"no binfmt_misc handler for {arch}; run build/build-agents.sh or update-binfmts")
    return [binary, *args]


@pytest.fixture
def unpack() -> Iterator[Path]:
    """The agent's TMPDIR.  Short on purpose: the self-test puts a unix
    socket below TMPDIR (108-byte limit), and pytest's tmp_path is long."""
    path = Path(tempfile.mkdtemp(prefix="pq-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_agent(arch: str, how: str, unpack: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_PYI", "STATICX", "TMUX"))}
    env["TMPDIR"] = str(unpack)
    return subprocess.run(command(arch, how, *args), capture_output=True, text=True, env=env,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize(("arch", "how"), CASES)
def test_version(arch: str, how: str, unpack: Path) -> None:
    done = run_agent(arch, how, unpack, "version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == version()
    # Both bootloaders (staticx, PyInstaller onefile) unpack under TMPDIR and
    # remove what they unpacked.
    assert list(unpack.iterdir()) == []


@pytest.mark.parametrize(("arch", "how"), CASES)
def test_selftest(arch: str, how: str, unpack: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed on the host for the self-test")
    done = run_agent(arch, how, unpack, "selftest")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "selftest ok" in done.stdout
    assert list(unpack.iterdir()) == []


@pytest.mark.parametrize("arch", selected_arches())
def test_manifest_entry(arch: str) -> None:
    data = manifest()
    assert data["version"] == version()
    entry = data["agents"][arch]  # type: ignore[index]
    binary = agent_binary(arch)
    assert entry["sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    assert entry["size"] == binary.stat().st_size
    assert binary.stat().st_size <= 8_000_000
    # Provenance: what it was frozen from, never a rolling suite.
    for field in ("suite", "python", "pyinstaller", "staticx"):
        assert entry.get(field), f"the manifest entry of {arch} lacks {field}"
    assert "sid" not in entry["suite"] and "unstable" not in entry["suite"]


@pytest.mark.parametrize("arch", selected_arches())
def test_static_executable(arch: str) -> None:
    header = agent_binary(arch).read_bytes()[:64]
    assert header[:4] == b"\x7fELF"
    # A static executable has no PT_INTERP program header.
    binary = agent_binary(arch).read_bytes()
    phoff = int.from_bytes(binary[32:40], "little")
    phentsize = int.from_bytes(binary[54:56], "little")
    phnum = int.from_bytes(binary[56:58], "little")
    types = [int.from_bytes(binary[phoff + i * phentsize: phoff + i * phentsize + 4], "little")
             for i in range(phnum)]
    assert 3 not in types, "p-agent has an ELF interpreter: not static"


def agent_home(arch: str, how: str) -> Path:
    """A home for one agent outside /tmp (which the tests below hide)."""
    cache = Path(os.environ.get("P_BUILD_CACHE", "/var/cache/p-build"))
    home = cache / "run" / f"nx-{arch[:2]}{how[:1]}-{os.getpid()}"
    (home / ".p" / "tmp").mkdir(parents=True, exist_ok=True)
    return home


def run_with_noexec_tmp(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """``argv`` with /tmp read-only and noexec (a private mount namespace),
    TMPDIR under the agent's home, as the client's launcher sets it."""
    if shutil.which("unshare") is None:
        pytest.fail("util-linux unshare missing")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_PYI", "STATICX", "TMUX"))}
    env.update(TMPDIR=str(home / ".p" / "tmp"), HOME=str(home))
    script = 'mount -t tmpfs -o ro,noexec,nosuid,size=1m tmpfs /tmp && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize(("arch", "how"), CASES)
def test_selftest_with_readonly_noexec_tmp(arch: str, how: str) -> None:
    """With TMPDIR under the agent's home, unpacking and the self-test work."""
    home = agent_home(arch, how)
    # The checkout itself may live under /tmp (CI clones anywhere), which
    # the private mount hides: run a copy kept next to the home.
    binary = home / "p-agent"
    shutil.copy2(agent_binary(arch), binary)
    try:
        done = run_with_noexec_tmp(command(arch, how, "selftest", binary_path=binary), home)
        assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        assert "selftest ok" in done.stdout
        assert list((home / ".p" / "tmp").iterdir()) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize(("arch", "how"), CASES)
def test_unpacked_once_then_started_from_there(arch: str, how: str) -> None:
    """The first start from the binary lays out the unpacked agent (as the
    client's launcher asks); the program there runs the self-test, says
    which binary it came from, and writes nothing under TMPDIR."""
    home = agent_home(arch, how)
    binary = home / "p-agent"
    shutil.copy2(agent_binary(arch), binary)
    sha256 = manifest()["agents"][arch]["sha256"]  # type: ignore[index]
    lib = home / ".p" / "lib" / sha256[:16]
    pidfile = home / ".p" / "run" / f"agent-{version()}.pid"
    try:
        done = run_with_noexec_tmp(command(arch, how, "serve", "--detach", "--unpack-to", str(lib),
                                           "--sha256", sha256, binary_path=binary), home)
        assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        assert (lib / ".complete").read_text().strip() == sha256
        unpacked = lib / "p-agent"
        done = run_with_noexec_tmp(command(arch, how, "version", "--verbose", binary_path=unpacked), home)
        assert done.returncode == 0, done.stderr
        assert f"sha256: {sha256} (unpacked)" in done.stdout
        done = run_with_noexec_tmp(command(arch, how, "selftest", binary_path=unpacked), home)
        assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        assert "selftest ok" in done.stdout
        assert list((home / ".p" / "tmp").iterdir()) == []
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(home, ignore_errors=True)


def test_the_client_wheel_carries_every_built_agent(tmp_path: Path) -> None:
    """`pip install` of a wheel built after `make agents` can provision any
    worker offline: the binaries and their manifest travel inside it."""
    import json
    import sys
    import zipfile

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path), str(root)], check=True, timeout=TIMEOUT)
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        carried = json.loads(archive.read("p/agents/manifest.json"))
        for arch in selected_arches():
            entry = carried["agents"][arch]
            data = archive.read(f"p/agents/{entry['file']}")
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] == manifest()["agents"][arch]["sha256"]
