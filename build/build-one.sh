#!/usr/bin/env bash
# Build p/agents/p-agent-<arch> (unconditionally) and record it in the
# manifest.  Normally called by build/build-agents.sh, which skips fresh
# arches.  x86_64 freezes natively on an x86_64 host; every other arch
# freezes natively *inside* its Debian rootfs under qemu-user (binfmt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=build/lib.sh
. "$here/lib.sh"

arch=${1:?usage: build-one.sh <arch>}
deb_arch "$arch" >/dev/null
out_dir=${P_AGENTS_DIR:-$root/p/agents}
out=$out_dir/p-agent-$arch
mkdir -p "$P_BUILD_CACHE/logs" "$out_dir"
cleanup=()
on_exit() {
    local c
    for c in "${cleanup[@]}"; do eval "$c"; done
}
trap on_exit EXIT
if [[ -z ${P_BUILD_SRC:-} ]]; then
    P_BUILD_SRC=$(snapshot_sources "$root")
    cleanup+=("rm -rf '$P_BUILD_SRC'")
fi
export P_BUILD_SRC
export P_AGENTS_DIR=${P_AGENTS_DIR:-$(cd "$here/.." && pwd)/p/agents}
src_root=$P_BUILD_SRC
version=$(agents_py version)

# One build per arch at a time (two `make agents` must not share a rootfs).
exec 9>"$P_BUILD_CACHE/.lock-$arch"
flock 9

t0=$SECONDS
if [[ $arch == "$(host_arch)" ]]; then
    venv=$P_BUILD_CACHE/venv-$arch
    "$here/venv.sh" "$venv" "${P_BUILD_PYTHON:-/usr/bin/python3}"
    log "$arch: freezing natively"
    # shellcheck disable=SC1091
    host_suite=$(. /etc/os-release && echo "${ID:-linux} ${VERSION_CODENAME:-${VERSION_ID:-?}} (build host)")
    "$here/freeze.sh" "$src_root" "$venv" "$out.new" "$host_suite"
else
    ensure_binfmt "$arch"
    rootfs=$("$here/rootfs.sh" "$arch" build)
    cleanup+=("umount_under '$rootfs'")
    chroot_mounts "$rootfs"
    copy_host_ca "$rootfs"
    cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
    # Fresh copy of the sources (only what the freeze needs).
    src=$rootfs/opt/p-build/src
    rm -rf "$src" "$rootfs/opt/p-build/out"
    mkdir -p "$src/agent" "$src/build" "$rootfs/opt/p-build/out"
    tar -C "$src_root" -cf - agent/p_agent p_protocol build | tar -C "$src" -xf -
    log "$arch: preparing venv in $rootfs (first time: pip builds staticx, maybe PyInstaller)"
    in_chroot "$rootfs" bash /opt/p-build/src/build/venv.sh /opt/p-build/venv /usr/bin/python3
    log "$arch: freezing inside $rootfs under qemu-user"
    in_chroot "$rootfs" bash /opt/p-build/src/build/freeze.sh /opt/p-build/src /opt/p-build/venv \
        /opt/p-build/out/p-agent "debian $(deb_suite "$arch")"
    cp "$rootfs/opt/p-build/out/p-agent" "$out.new"
    cp "$rootfs/opt/p-build/out/p-agent.build.json" "$out.new.build.json"
    umount_under "$rootfs"
fi

got=$(agents_py elf-arch "$out.new")
[[ $got == "$arch" ]] || die "$out.new is a $got binary, expected $arch"
# Smoke test: the static binary runs (through qemu-user if foreign) with no
# sysroot and a private TMPDIR, and reports the expected version.
smoke_tmp=$(mktemp -d)
if [[ $arch == "$(host_arch)" ]]; then
    said=$(TMPDIR=$smoke_tmp "$out.new" version)
else
    said=$(TMPDIR=$smoke_tmp "qemu-$arch-static" "$out.new" version)
fi
leftover=$(ls -A "$smoke_tmp")
rm -rf "$smoke_tmp"
[[ $said == "$version" ]] || die "$arch: binary says version '$said', expected '$version'"
[[ -z $leftover ]] || die "$arch: binary left temp files behind: $leftover"
mv -f "$out.new" "$out"
agents_py record "$arch" "$out" "$out.new.build.json"
rm -f "$out.new.build.json"
echo $((SECONDS - t0)) >"$P_BUILD_CACHE/logs/$arch.seconds"
log "$arch: built $out ($(stat -c %s "$out") bytes) in $((SECONDS - t0))s"
