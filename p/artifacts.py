"""Which p-agent to install on a worker: a frozen binary for its arch, or,
on a worker with python3 and no binary built for it, a zipapp of the source."""

from __future__ import annotations

import json
import os
from functools import cache
from types import ModuleType

from p_protocol import VERSION
from p_protocol.platforms import ARCHES, normalize_arch
from p_protocol.sources import agent_roots, digest_sources, sha256

from .errors import PError

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    import zipfile

AGENTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agents")
ZIPAPP_MAIN = b"from p_agent.__main__ import run\nrun()\n"


class Artifact:
    """A plain class, not a dataclass: see WorkerFacts in p/provision.py."""

    def __init__(self, kind: str, arch: str, sha256: str, data_path: str | None) -> None:
        self.kind = kind  # "binary" or "zipapp"
        self.arch = arch
        self.sha256 = sha256
        self.data_path = data_path  # a binary on disk; zipapps are built in memory

    @property
    def remote_name(self) -> str:
        suffix = ".pyz" if self.kind == "zipapp" else ""
        return f"p-agent-{VERSION}{suffix}"

    def read(self) -> bytes:
        if self.data_path is not None:
            with open(self.data_path, "rb") as src:
                return src.read()
        return zipapp_bytes()


def choose(worker: str, machine: str, system: str, has_python3: bool) -> Artifact:
    arch = normalize_arch(machine)
    if system != "Linux" or arch is None:
        raise PError(f"worker {worker} runs {system} on {machine}; p supports Linux workers "
                     f"on {', '.join(ARCHES)}")
    binary = _binaries().get(arch)
    if binary is not None:
        return binary
    if has_python3:
        return Artifact("zipapp", arch, sha256(zipapp_bytes()).hexdigest(), None)
    raise PError(f"worker {worker} ({arch}) has no python3 and this install of p carries no "
                 f"p-agent binary for {arch}; build them with `make agents` and reinstall p")


@cache
def _binaries() -> dict[str, Artifact]:
    try:
        with open(os.path.join(AGENTS_DIR, "manifest.json")) as src:
            manifest = json.load(src)
    except (OSError, ValueError):
        return {}
    if manifest.get("version") != VERSION or manifest.get("agent_sources") != sources_digest():
        return {}  # built from other sources than this install's agent: stale
    found = {}
    for arch, entry in (manifest.get("agents") or {}).items():
        path = os.path.join(AGENTS_DIR, entry.get("file", ""))
        if arch in ARCHES and os.path.isfile(path):
            found[arch] = Artifact("binary", arch, entry["sha256"], path)
    return found


@cache
def sources_digest() -> str:
    import p_agent

    import p_protocol

    return digest_sources(agent_roots(_package_dir(p_agent), _package_dir(p_protocol)))


@cache
def zipapp_bytes() -> bytes:
    """The agent's source as a zipapp, byte-for-byte the same for the same
    source (fixed timestamps), so its sha256 names the content."""
    import io
    import zipfile  # only here: its imports cost a cold start ~10 ms

    import p_agent

    import p_protocol

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in (p_agent, p_protocol):
            root = _package_dir(package)
            for name in sorted(os.listdir(root)):
                if name.endswith(".py"):
                    _add(archive, f"{package.__name__}/{name}", _read(os.path.join(root, name)))
        _add(archive, "__main__.py", ZIPAPP_MAIN)
    return buffer.getvalue()


def _package_dir(package: ModuleType) -> str:
    return os.path.dirname(os.path.abspath(package.__file__ or ""))


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    import zipfile

    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _read(path: str) -> bytes:
    with open(path, "rb") as src:
        return src.read()
