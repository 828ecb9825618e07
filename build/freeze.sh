#!/usr/bin/env bash
# Freeze p-agent into one static executable, natively on this machine.
#
#   build/freeze.sh <src-root> <venv-dir> <output-file> [suite]
#
# <src-root> holds agent/p_agent/, p_protocol/ and build/ (agent_entry.py,
# agent.spec).  Runs on the host for x86_64 and inside the arch's rootfs for
# the others: PyInstaller (build/agent.spec) bundles the interpreter and the
# stdlib modules the agent uses into one dynamic executable, then staticx
# bundles that with its shared libraries (glibc, ld.so, libz...) behind a
# static musl bootloader.  Also writes <output-file>.build.json: the
# provenance `build/agents.py record` puts in the manifest and
# `p-agent version --verbose` prints.  Needs patchelf (as staticx does).
set -euo pipefail
usage="usage: freeze.sh <src-root> <venv> <out> [suite]"
src=$(cd "${1:?$usage}" && pwd)
venv=${2:?$usage}
out=${3:?$usage}
suite=${4:-unknown}
py=$venv/bin/python

work=$(mktemp -d "${TMPDIR:-/tmp}/p-freeze.XXXXXX")
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export PYTHONHASHSEED=0

# Modulegraph follows every import it can see, also those in code paths the
# agent never takes (shutil's archive formats, uuid's platform probes, the
# encodings' CJK codecs).  Each of these is left out because nothing the
# agent runs imports it, which the self-test and the end-to-end tests on
# the frozen agent check.  `inspect` goes too: collecting it adds a runtime
# hook that imports zipfile and pathlib at every start.  `_hashlib` would
# bring all of libcrypto; hashlib falls back to the interpreter's own sha256.
excluded=(
    tkinter _tkinter unittest pydoc doctest lib2to3 idlelib ensurepip venv test
    email http xml html xmlrpc logging pdb difflib inspect importlib.metadata
    decimal _decimal _pydecimal fractions statistics calendar _strptime
    pickle _pickle _compat_pickle tarfile gzip bz2 _bz2 lzma _lzma csv _csv
    quopri stringprep _hashlib _uuid
    _multibytecodec _codecs_cn _codecs_hk _codecs_iso2022 _codecs_jp _codecs_kr _codecs_tw
)

"$py" - "$work/build_info.json" "$(uname -m)" "$suite" \
    "$("$py" -m PyInstaller --version)" "$("$py" -m staticx --version | awk '{print $NF}')" <<'EOF'
import json, platform, sys
path, arch, suite, pyinstaller, staticx = sys.argv[1:]
info = {"arch": arch, "suite": suite, "python": platform.python_version(),
        "pyinstaller": pyinstaller, "staticx": staticx}
with open(path, "w") as out:
    json.dump(info, out, sort_keys=True)
EOF
# `p-agent version --verbose` prints this module's provenance.
printf 'INFO = %s\n' "$(cat "$work/build_info.json")" >"$work/p_agent_build.py"

P_FREEZE_SRC=$src P_FREEZE_WORK=$work P_FREEZE_EXCLUDES="${excluded[*]}" \
    "$py" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$work/dist" --workpath "$work/build" "$src/build/agent.spec"

"$py" -m staticx --strip "$work/dist/p-agent" "$work/p-agent"
mkdir -p "$(dirname "$out")"
cp "$work/p-agent" "$out.tmp"
chmod 0755 "$out.tmp"
mv "$out.tmp" "$out"
cp "$work/build_info.json" "$out.build.json"
