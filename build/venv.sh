#!/usr/bin/env bash
# Create (or reuse) the venv holding the pinned freezing tools.
#
#   build/venv.sh <venv-dir> [python]
#
# Runs wherever the freeze runs: on the host for x86_64, inside the arch's
# rootfs (through chroot + qemu-user) for the others.  The venv is complete
# only when its marker matches build/requirements.txt; an interrupted run
# is wiped and redone.  staticx is built from source with musl-gcc (its
# bootloader must match the target machine: the py3-none-any wheels some
# older staticx releases shipped carry an x86-64 bootloader).
set -euo pipefail
venv=${1:?usage: venv.sh <venv-dir> [python]}
python=${2:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
req=$here/requirements.txt
marker=$venv/.p-build-venv
want="$(sha256sum "$req" | cut -d' ' -f1) $($python -c 'import sys; print(sys.version.split()[0])') $(uname -m) v1"

if [[ -f $marker && $(cat "$marker") == "$want" ]]; then
    echo "venv $venv is up to date" >&2
    exit 0
fi
rm -rf "$venv"
"$python" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if command -v musl-gcc >/dev/null; then
    export BOOTLOADER_CC=musl-gcc
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# --no-binary staticx: build its bootloader for this machine.
"$venv/bin/python" -m pip install -q --no-binary staticx -r "$req"
"$venv/bin/python" -m PyInstaller --version >/dev/null
"$venv/bin/python" -m staticx --version >/dev/null
echo "$want" >"$marker"
echo "venv $venv ready" >&2
