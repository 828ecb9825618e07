"""The worker platforms p ships a static agent for, listed once.

The client (which binary a worker gets), build/ (Debian's name of each,
ELF machines, binfmt handlers), qemu-tests/ and bench/ read this list; a
test holds the CI workflow's matrix to it. Stdlib only: the build runs it
as `python3 -I -S` from a snapshot of the sources. The agent never imports
it.
"""

from __future__ import annotations


# A plain class, not a NamedTuple: importing typing costs a cold start of
# the client ~4 ms, before its ssh can begin.
class Platform:
    __slots__ = ("arch", "debian", "elf_machine", "aliases")

    def __init__(self, arch: str, debian: str, elf_machine: int, aliases: tuple[str, ...]) -> None:
        self.arch = arch  # as `uname -m` says it, and as the binary is named
        self.debian = debian  # Debian's architecture name (debootstrap --arch)
        self.elf_machine = elf_machine  # e_machine of its ELF files
        self.aliases = aliases  # other names `uname -m` may give


PLATFORMS = (
    Platform("x86_64", "amd64", 0x3E, ("amd64",)),
    Platform("aarch64", "arm64", 0xB7, ("arm64",)),
    Platform("riscv64", "riscv64", 0xF3, ()),
)
ARCHES = tuple(platform.arch for platform in PLATFORMS)


def by_arch(arch: str) -> Platform | None:
    return next((platform for platform in PLATFORMS if platform.arch == arch), None)


def normalize_arch(machine: str) -> str | None:
    """The arch p names a worker's `uname -m` by, or None if unsupported."""
    name = machine.strip().lower()
    for platform in PLATFORMS:
        if name == platform.arch or name in platform.aliases:
            return platform.arch
    return None
