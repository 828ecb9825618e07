#!/usr/bin/env bash
# Freeze p-agent into one static executable, natively on this machine.
#
#   build/freeze.sh <src-root> <venv-dir> <output-file>
#
# <src-root> holds agent/p_agent/, p_protocol/ and build/agent_entry.py.
# Runs on the host for x86_64 and inside the arch's rootfs for the others:
# PyInstaller --onefile bundles the interpreter and stdlib into one dynamic
# executable, then staticx bundles that with its shared libraries (glibc,
# ld.so, libz...) behind a static musl bootloader.
set -euo pipefail
src=$(cd "${1:?usage: freeze.sh <src-root> <venv> <out>}" && pwd)
venv=${2:?usage: freeze.sh <src-root> <venv> <out>}
out=${3:?usage: freeze.sh <src-root> <venv> <out>}
py=$venv/bin/python

work=$(mktemp -d "${TMPDIR:-/tmp}/p-freeze.XXXXXX")
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export PYTHONHASHSEED=0

# Only stdlib modules the agent imports are collected (modulegraph follows
# imports); p_agent/p_protocol submodules are listed explicitly in case of
# lazy imports.
"$py" -m PyInstaller --onefile --noconfirm --clean --log-level WARN \
    --name p-agent \
    --paths "$src/agent" --paths "$src" \
    --collect-submodules p_agent --collect-submodules p_protocol \
    --exclude-module tkinter --exclude-module _tkinter \
    --exclude-module unittest --exclude-module pydoc --exclude-module doctest \
    --exclude-module lib2to3 --exclude-module idlelib --exclude-module ensurepip \
    --exclude-module venv --exclude-module test \
    --strip \
    --distpath "$work/dist" --workpath "$work/build" --specpath "$work" \
    "$src/build/agent_entry.py"

"$py" -m staticx --strip "$work/dist/p-agent" "$work/p-agent"
mkdir -p "$(dirname "$out")"
cp "$work/p-agent" "$out.tmp"
chmod 0755 "$out.tmp"
mv "$out.tmp" "$out"
