"""A frozen agent unpacked once per build, so later starts unpack nothing.

The static binary is a staticx bootloader around a PyInstaller --onefile
program: at every start staticx decompresses that program and the C
libraries (glibc, ld.so) into a temporary directory, then the program
decompresses the interpreter and its modules into another one. That costs a
start several times a Python one. So the binary also carries a --onedir
build of the same program (build/agent.spec), and the first agent started
from a binary lays out one directory, ``~/.p/lib/<sha256 prefix>/``, with
that program, the interpreter's files and the C libraries, and points the
program's interpreter and library path there, as staticx does for its
temporary copy. Later starts run it from there (p/provision.py's launcher).
"""

from __future__ import annotations

import os
import struct
import sys

# Named by staticx: the bootloader exports the bundle's path, and the bundle
# holds the program and the dynamic linker behind these two symlinks.
BUNDLE_ENV = "STATICX_BUNDLE_DIR"
PROG_LINK = ".staticx.prog"
INTERP_LINK = ".staticx.interp"
# Named by build/agent.spec: the onedir program, among the onefile's data.
ONEDIR = "p-agent-onedir"
# What the launcher runs in the unpacked directory.
PROGRAM = "p-agent"
# Written last, holding the binary's sha256: the directory is complete.
COMPLETE = ".complete"

PT_INTERP = 3
SHT_DYNAMIC = 6
DT_NULL = 0
DT_RPATH = 15


class UnpackError(Exception):
    pass


def sources() -> tuple[str, str] | None:
    """(staticx bundle, PyInstaller's unpacked files) of this process, when
    it runs from a static binary that carries the onedir program."""
    bundle = os.environ.get(BUNDLE_ENV)
    frozen = getattr(sys, "_MEIPASS", None)
    if not bundle or not frozen or not os.path.isfile(os.path.join(frozen, ONEDIR)):
        return None
    return bundle, frozen


def unpack(bundle: str, frozen: str, dest: str, sha256: str) -> None:
    """Lay out ``dest`` to run the onedir program from ``frozen`` with the
    C libraries of ``bundle``.

    Built beside ``dest`` and renamed into place, so ``dest`` either does not
    exist or is complete; of two agents racing to the same ``dest``, the
    second finds it complete and leaves it alone.
    """
    if is_complete(dest, sha256):
        return
    import shutil  # only for the first start of a build: see files.rmtree
    import tempfile

    parent = os.path.dirname(dest)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
    try:
        tree = os.path.join(work, "tree")
        # The interpreter's own files first: where both have a library
        # (libz), the one Python was built with wins.
        shutil.copytree(frozen, tree, symlinks=True)
        onefile = os.readlink(os.path.join(bundle, PROG_LINK))
        for entry in os.scandir(bundle):
            target = os.path.join(tree, entry.name)
            if entry.name in (PROG_LINK, onefile) or os.path.lexists(target):
                continue
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            else:
                shutil.copy2(entry.path, target)
        program = os.path.join(tree, PROGRAM)
        os.replace(os.path.join(tree, ONEDIR), program)
        os.chmod(program, 0o700)
        _owner_only(tree)
        patch_elf(program, interp=os.path.join(dest, INTERP_LINK), rpath=dest)
        with open(os.open(os.path.join(tree, COMPLETE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as mark:
            mark.write(sha256 + "\n")
            mark.flush()
            os.fsync(mark.fileno())
        if is_complete(dest, sha256):
            return  # another start made it meanwhile
        shutil.rmtree(dest, ignore_errors=True)  # a half-made one (no COMPLETE mark)
        try:
            os.rename(tree, dest)
        except OSError:
            if not is_complete(dest, sha256):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _owner_only(tree: str) -> None:
    """Everything under ~/.p is the user's alone (the bundle's files keep
    their packages' modes, 0644 and 0755): 0700 for directories and
    executables, 0600 for the rest."""
    for directory, _dirs, files in os.walk(tree):
        os.chmod(directory, 0o700)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700 if os.stat(path).st_mode & 0o100 else 0o600)


def is_complete(dest: str, sha256: str) -> bool:
    try:
        with open(os.path.join(dest, COMPLETE)) as mark:
            return mark.read().strip() == sha256
    except OSError:
        return False


def patch_elf(path: str, *, interp: str, rpath: str) -> None:
    """Point a 64-bit little-endian ELF's interpreter and DT_RPATH at new
    paths, in place, as the staticx bootloader does to its temporary copy.
    build/agent.spec left placeholders of 256 bytes for both."""
    with open(path, "r+b") as elf:
        data = elf.read()
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise UnpackError(f"{path} is not a 64-bit little-endian ELF file")
        phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
        slots = []
        for index in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + index * phentsize)
            if p_type == PT_INTERP:
                slots.append((p_offset, p_filesz - 1, interp))
        sections = [struct.unpack_from("<IIQQQQI", data, shoff + index * shentsize) for index in range(shnum)]
        for _, sh_type, _, _, sh_offset, sh_size, sh_link in sections:
            if sh_type != SHT_DYNAMIC:
                continue
            strtab = sections[sh_link][4]
            for entry in range(sh_offset, sh_offset + sh_size, 16):
                tag, value = struct.unpack_from("<qQ", data, entry)
                if tag == DT_NULL:
                    break
                if tag == DT_RPATH:
                    start = strtab + value
                    slots.append((start, data.index(b"\0", start) - start, rpath))
        if sorted(kind for _, _, kind in slots) != sorted([interp, rpath]):
            raise UnpackError(f"{path} lacks the interpreter or RPATH that staticx patches")
        for offset, room, text in slots:
            encoded = text.encode()
            if len(encoded) > room:
                raise UnpackError(f"{text!r} is longer than the {room} bytes {path} has room for")
            elf.seek(offset)
            elf.write(encoded + b"\0")

