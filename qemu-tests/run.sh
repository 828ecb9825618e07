#!/usr/bin/env bash
# `make qemu-tests`: run the QEMU tests against the binaries `make agents`
# built (p/agents/).  Needs root: binfmt_misc, chroot, mounts.
#
#   bash qemu-tests/run.sh [pytest args...]
#
# $P_ARCHES (comma separated) limits the arches; $PYTHON picks the
# interpreter that has the client's dependencies and pytest (default: the
# repo's .venv if present, else python3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=build/lib.sh
. "$root/build/lib.sh"

[[ $(id -u) == 0 ]] || die "qemu-tests need root (chroot, mount, binfmt_misc)"
arches=()
IFS=', ' read -r -a arches <<<"${P_ARCHES:-${ALL_ARCHES[*]}}"
pkgs=(tmux openssh-client rsync util-linux)
for a in "${arches[@]}"; do
    [[ $a == "$(host_arch)" ]] || pkgs+=(qemu-user-static binfmt-support debootstrap)
done
ensure_host_packages "${pkgs[@]}"
for a in "${arches[@]}"; do ensure_binfmt "$a"; done

# Build the cached Python-less worker rootfs of the foreign arches up front,
# in parallel (the tests would otherwise make them one after the other).
pids=()
for a in "${arches[@]}"; do
    [[ $a == "$(host_arch)" ]] && continue
    bash "$root/build/rootfs.sh" "$a" worker >/dev/null &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || die "building a worker rootfs failed"; done

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $root/.venv/bin/python ]]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
cd "$root"
exec "$PYTHON" -m pytest qemu-tests -p no:cacheprovider -o timeout=1800 -v "$@"
