# shellcheck shell=bash
# Shared helpers for the p-agent build pipeline (sourced, not executed).
set -euo pipefail

P_BUILD_CACHE=${P_BUILD_CACHE:-/var/cache/p-build}
P_BUILD_MIRROR=${P_BUILD_MIRROR:-http://deb.debian.org/debian}
# The build tools' pins live in build/requirements.txt, the supported arches
# in p_protocol/platforms.py (read through this checkout's build/agents.py).
P_BUILD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '[p-build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

platform_py() { python3 -I -S "$P_BUILD_DIR/agents.py" "$@"; }
read -r -a ALL_ARCHES <<<"$(platform_py arches)"

# Debian architecture name for a `uname -m` name.
deb_arch() { platform_py deb-arch "$1" || die "no Debian architecture for $1"; }

# Debian suite used for an arch's rootfs: a stable release, never sid, so a
# build does not depend on the day it runs.  riscv64 is a release
# architecture only since trixie (bookworm has none); its index was checked
# against the Release file on 2026-11-30.  The manifest records each arch's
# suite and tool versions (build/agents.py record).
deb_suite() {
    case "$1" in
        aarch64) echo "${P_BUILD_SUITE_AARCH64:-bookworm}" ;;
        riscv64) echo "${P_BUILD_SUITE_RISCV64:-trixie}" ;;
        x86_64) echo "${P_BUILD_SUITE_X86_64:-bookworm}" ;;
        *) die "unsupported arch: $1" ;;
    esac
}

host_arch() { uname -m; }

# Make sure binfmt_misc is mounted and qemu-user handlers are registered
# (needed to exec foreign binaries, including inside a chroot).
ensure_binfmt() {
    local arch=$1
    [[ $arch == "$(host_arch)" ]] && return 0
    if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
            die "cannot mount binfmt_misc"
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-$arch ]]; then
        if command -v update-binfmts >/dev/null; then
            update-binfmts --enable "qemu-$arch" >/dev/null 2>&1 || true
        fi
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-$arch ]]; then
        # Register by hand (F flag: interpreter is opened now, so it works
        # inside chroots that do not contain qemu).
        register_binfmt "$arch"
    fi
    [[ -e /proc/sys/fs/binfmt_misc/qemu-$arch ]] ||
        die "no binfmt handler for $arch; install qemu-user-static binfmt-support"
    grep -q '^flags:.*F' "/proc/sys/fs/binfmt_misc/qemu-$arch" ||
        log "warning: qemu-$arch binfmt handler lacks the F flag; chroots need qemu inside"
}

register_binfmt() {
    local arch=$1 magic mask interp
    interp=$(command -v "qemu-$arch-static") || die "qemu-$arch-static not found"
    read -r magic mask <<<"$(platform_py binfmt "$arch")" || die "no binfmt magic for $arch"
    printf ':qemu-%s:M::%s:%s:%s:OCF\n' "$arch" "$magic" "$mask" "$interp" \
        >/proc/sys/fs/binfmt_misc/register
}

# List mount points at or below a directory (deepest first).
mounts_under() {
    local dir
    dir=$(readlink -f "$1")
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

umount_under() {
    local m
    [[ -d $1 ]] || return 0
    for m in $(mounts_under "$1"); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
}

# rm -rf a directory only after everything mounted below it is unmounted.
safe_rmtree() {
    local dir=$1
    [[ -e $dir ]] || return 0
    umount_under "$dir"
    if [[ -n $(mounts_under "$dir") ]]; then
        die "refusing to delete $dir: still has mounts: $(mounts_under "$dir" | tr '\n' ' ')"
    fi
    rm -rf --one-file-system "$dir"
}

# Mount /proc, /dev, /dev/pts, /sys into a chroot; callers must trap
# `umount_under <root>` on exit.
chroot_mounts() {
    local root=$1
    mkdir -p "$root/proc" "$root/dev" "$root/sys"
    mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
    mountpoint -q "$root/dev" || mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    mountpoint -q "$root/sys" || mount -t sysfs sysfs "$root/sys"
}

# Run a command in a chroot with a clean environment.
in_chroot() {
    local root=$1
    shift
    env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        chroot "$root" "$@"
}

# Install the host CA bundle into a rootfs so pip/TLS there trusts what the
# host trusts (e.g. a TLS-intercepting proxy's CA).
copy_host_ca() {
    local root=$1 src=/etc/ssl/certs/ca-certificates.crt
    [[ -r $src ]] || return 0
    rm -f "$root/etc/ssl/certs/ca-certificates.crt"
    cp "$src" "$root/etc/ssl/certs/ca-certificates.crt"
}

# build/agents.py from the snapshot, with the standard library alone: a file
# the snapshot lacks fails here on every machine, not only on a clean one.
agents_py() { python3 -I -S "${P_BUILD_SRC:?snapshot_sources first}/build/agents.py" "$@"; }

sha256_of_string() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# Install missing host packages (Debian/Ubuntu, as root) so a fresh machine
# or CI runner can run `make agents` without a separate setup step.
# Set P_BUILD_NO_APT=1 to only check.
ensure_host_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ ${P_BUILD_NO_APT:-0} == 1 ]] || ! command -v apt-get >/dev/null; then
        die "missing host packages: ${missing[*]}"
    fi
    log "installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    }
}

# Host packages per architecture being built.
host_packages_for() {
    if [[ $1 == "$(host_arch)" ]]; then
        echo python3 python3-venv python3-dev gcc libc6-dev zlib1g-dev binutils scons patchelf musl-tools
    else
        echo debootstrap qemu-user-static binfmt-support debian-archive-keyring
    fi
}

# Copy what a freeze reads (agent sources, p_protocol, build/) to a fresh
# directory under the cache; prints its path.
snapshot_sources() {
    local repo=$1 dest
    mkdir -p "$P_BUILD_CACHE/src"
    dest=$(mktemp -d "$P_BUILD_CACHE/src/snap.XXXXXX")
    tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - agent/p_agent p_protocol \
        build/agent.spec build/agent_entry.py build/agents.py build/freeze.sh build/lib.sh build/requirements.txt \
        build/rootfs.sh build/venv.sh | tar -C "$dest" -xf -
    echo "$dest"
}
