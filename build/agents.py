"""Bookkeeping for build/build-agents.sh: version, sources hash, manifest.

    python3 build/agents.py version
    python3 build/agents.py arches                 # the supported arches (p_protocol/platforms.py)
    python3 build/agents.py deb-arch <arch>        # Debian's name of one
    python3 build/agents.py binfmt <arch>          # magic and mask of its binfmt_misc handler
    python3 build/agents.py sources-hash
    python3 build/agents.py agent-sources         # the client's digest of the agent
    python3 build/agents.py is-fresh <arch>        # exit 0 if no rebuild needed
    python3 build/agents.py elf-arch <file>        # prints x86_64/aarch64/riscv64
    python3 build/agents.py record <arch> <file> [build.json|manifest.json]  # add/refresh an entry
    python3 build/agents.py table <arch>=<rebuilt|cached>:<seconds> ...  # the summary

Stdlib only, and held to it: build-agents.sh runs it as `python3 -I -S`
(no site-packages, no PYTHONPATH), so it can import nothing but the standard
library and the snapshot's own `p_protocol`. It never imports the client `p`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

# The sources are the tree this file lives in: while building, a snapshot
# (build/lib.sh snapshot_sources), so the recorded hashes describe exactly
# what was frozen even if the work tree changes during the build.  The
# binaries and their manifest go to the checkout's p/agents, which the
# build names in P_AGENTS_DIR.
SRC = Path(__file__).resolve().parent.parent
AGENTS_DIR = Path(os.environ.get("P_AGENTS_DIR") or SRC / "p" / "agents")
MANIFEST = AGENTS_DIR / "manifest.json"
sys.path.insert(0, str(SRC))
from p_protocol.platforms import ARCHES, PLATFORMS, by_arch  # noqa: E402

ELF_MACHINES = {platform.elf_machine: platform.arch for platform in PLATFORMS}
# Inputs of a frozen agent: its sources and the build/ files that shape the
# binary (entry point, freeze flags, pinned tools, rootfs suites/packages);
# pure orchestration (build-agents.sh, build-one.sh, this file) is left out
# so editing it does not force a rebuild.
SOURCE_GLOBS = ("agent/p_agent/**/*.py", "p_protocol/**/*.py")
# What build/freeze.sh says of a binary, kept in its manifest entry.
PROVENANCE = ("suite", "python", "pyinstaller", "staticx")
BUILD_INPUTS = ("agent.spec", "agent_entry.py", "freeze.sh", "lib.sh", "requirements.txt", "rootfs.sh", "venv.sh")


def version() -> str:
    text = (SRC / "p_protocol" / "__init__.py").read_text()
    match = re.search(r'^VERSION\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise SystemExit("p_protocol/__init__.py defines no VERSION = \"x.y.z\"")
    return match.group(1)


def source_files() -> list[Path]:
    files: set[Path] = set()
    for pattern in SOURCE_GLOBS:
        files.update(p for p in SRC.glob(pattern) if "__pycache__" not in p.parts)
    files.update(SRC / "build" / name for name in BUILD_INPUTS if (SRC / "build" / name).exists())
    return sorted(files)


def sources_hash() -> str:
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(SRC).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def agent_sources_digest() -> str:
    """The client's name for the agent sources, computed by the same function
    the client uses (p_protocol.sources, carried by the snapshot): the client
    installs binaries only when the manifest's `agent_sources` equals it."""
    from p_protocol.sources import agent_roots, digest_sources

    return digest_sources(agent_roots(str(SRC / "agent" / "p_agent"), str(SRC / "p_protocol")))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def elf_arch(path: Path) -> str:
    with path.open("rb") as src:
        header = src.read(20)
    if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        raise SystemExit(f"{path}: not a 64-bit little-endian ELF file")
    machine = int.from_bytes(header[18:20], "little")
    if machine not in ELF_MACHINES:
        raise SystemExit(f"{path}: unsupported ELF machine {machine:#x}")
    return ELF_MACHINES[machine]


def load_manifest() -> dict[str, Any]:
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {"version": version(), "agents": {}}
    if not isinstance(data, dict) or not isinstance(data.get("agents"), dict):
        return {"version": version(), "agents": {}}
    return data


def save_manifest(data: dict[str, Any]) -> None:
    AGENTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = MANIFEST.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, MANIFEST)


def is_fresh(arch: str) -> bool:
    data = load_manifest()
    entry = data["agents"].get(arch)
    binary = AGENTS_DIR / f"p-agent-{arch}"
    return bool(
        data.get("version") == version()
        and data.get("agent_sources") == agent_sources_digest()
        and isinstance(entry, dict)
        and entry.get("sources_sha256") == sources_hash()
        and binary.is_file()
        and entry.get("size") == binary.stat().st_size
        and entry.get("sha256") == file_sha256(binary)
    )


def record(arch: str, binary: Path, build_info: Path | None = None) -> None:
    """Enter a fresh binary in the manifest, with its provenance (the
    suite, Python, PyInstaller and staticx it was frozen with, as
    build/freeze.sh wrote them) beside its sha256."""
    if elf_arch(binary) != arch:
        raise SystemExit(f"{binary} is built for {elf_arch(binary)}, not {arch}")
    data = load_manifest()
    current = version()
    agents: dict[str, Any] = data["agents"]
    sources = agent_sources_digest()
    if data.get("version") != current or data.get("agent_sources") != sources:
        agents = {}  # entries built from another version or source must not survive
    provenance = json.loads(build_info.read_text()) if build_info else {}
    if isinstance(provenance, dict) and isinstance(provenance.get("agents"), dict):
        # Another manifest (CI assembles the per-arch ones): its entry's provenance.
        entry = provenance["agents"].get(arch) or {}
        provenance = {key: value for key, value in entry.items() if key in PROVENANCE}
    if not isinstance(provenance, dict) or provenance.get("arch", arch) != arch:
        raise SystemExit(f"{build_info}: not the provenance of a {arch} build")
    agents[arch] = {
        **{key: str(value) for key, value in provenance.items() if key in PROVENANCE},
        "file": binary.name,
        "sha256": file_sha256(binary),
        "size": binary.stat().st_size,
        "sources_sha256": sources_hash(),
    }
    # Drop entries whose binary vanished or changed behind our back.
    for name, entry in list(agents.items()):
        path = AGENTS_DIR / str(entry.get("file", ""))
        if not path.is_file() or path.stat().st_size != entry.get("size"):
            del agents[name]
    save_manifest({"version": current, "agent_sources": sources, "agents": dict(sorted(agents.items()))})


def table(results: list[str]) -> str:
    """One row per arch: size, sha256 prefix, seconds, rebuilt or cached."""
    agents = load_manifest()["agents"]
    rows = [("arch", "size", "sha256", "seconds", "build", "suite", "python")]
    for result in results:
        arch, _, rest = result.partition("=")
        how, _, seconds = rest.partition(":")
        entry = agents.get(arch) or {}
        size = entry.get("size")
        rows.append((arch, f"{size / 1e6:.1f} MB" if isinstance(size, int) else "-",
                     str(entry.get("sha256", "-"))[:12], seconds or "-", how,
                     str(entry.get("suite", "-")), str(entry.get("python", "-"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def platform(arch: str) -> Any:
    found = by_arch(arch)
    if found is None:
        raise SystemExit(f"unsupported arch: {arch} (supported: {' '.join(ARCHES)})")
    return found


def binfmt(arch: str) -> str:
    """binfmt_misc magic and mask (\\x escapes) matching 64-bit little-endian
    ELF executables and shared objects of ``arch``."""
    machine = platform(arch).elf_machine.to_bytes(2, "little")
    magic = b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00" + machine
    mask = b"\xff" * 7 + b"\x00" + b"\xff" * 8 + b"\xfe\xff\xff\xff"
    return " ".join("".join(f"\\x{byte:02x}" for byte in data) for data in (magic, mask))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "version":
        print(version())
    elif command == "arches":
        print(" ".join(ARCHES))
    elif command == "deb-arch":
        print(platform(args[0]).debian)
    elif command == "binfmt":
        print(binfmt(args[0]))
    elif command == "sources-hash":
        print(sources_hash())
    elif command == "agent-sources":
        print(agent_sources_digest())
    elif command == "is-fresh":
        return 0 if is_fresh(args[0]) else 1
    elif command == "elf-arch":
        print(elf_arch(Path(args[0])))
    elif command == "record":
        record(args[0], Path(args[1]), Path(args[2]) if len(args) > 2 else None)
    elif command == "table":
        print(table(args))
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
