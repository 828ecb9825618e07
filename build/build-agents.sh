#!/usr/bin/env bash
# `make agents`: build the static p-agent executables that are stale.
#
#   bash build/build-agents.sh [x86_64] [aarch64] [riscv64]
#
# Without arguments: the arches in $P_ARCHES (comma/space separated), or all.
#
# Output: p/agents/p-agent-<arch> and p/agents/manifest.json.  A binary is
# rebuilt only when the hash of its inputs (agent/p_agent, p_protocol and
# build/*) differs from the one recorded in the manifest.  Slow products
# (Debian rootfs per arch, venvs) are cached under $P_BUILD_CACHE
# (default /var/cache/p-build).  Foreign arches build in parallel when
# P_BUILD_PARALLEL=1 (default on machines with >= 2 CPUs); logs of those go
# to $P_BUILD_CACHE/logs/<arch>.log.  P_BUILD_FORCE=1 rebuilds even fresh
# binaries.  Needs root (debootstrap, chroot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=build/lib.sh
. "$here/lib.sh"

arches=("$@")
if [[ ${#arches[@]} -eq 0 && -n ${P_ARCHES:-} ]]; then
    IFS=', ' read -r -a arches <<<"$P_ARCHES"
fi
[[ ${#arches[@]} -gt 0 ]] || arches=("${ALL_ARCHES[@]}")
for a in "${arches[@]}"; do deb_arch "$a" >/dev/null; done
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mount); try: sudo make agents"
if [[ $(host_arch) != x86_64 ]]; then
    log "note: host is $(host_arch); every other arch builds in a rootfs"
fi

# Freeze a snapshot of the sources: edits made during the build do not mix
# into it, and the manifest records the hashes of what was frozen.
P_BUILD_SRC=$(snapshot_sources "$(cd "$here/.." && pwd)")
export P_BUILD_SRC
trap 'rm -rf "$P_BUILD_SRC"' EXIT
version=$(python3 "$here/agents.py" version)
stale=()
for a in "${arches[@]}"; do
    if [[ ${P_BUILD_FORCE:-0} != 1 ]] && python3 "$here/agents.py" is-fresh "$a"; then
        log "$a: p-agent $version is up to date"
    else
        stale+=("$a")
    fi
done
[[ ${#stale[@]} -gt 0 ]] || exit 0

pkgs=()
for a in "${stale[@]}"; do
    read -r -a more <<<"$(host_packages_for "$a")"
    pkgs+=("${more[@]}")
done
ensure_host_packages "${pkgs[@]}"

parallel=${P_BUILD_PARALLEL:-$([[ $(nproc) -ge 2 ]] && echo 1 || echo 0)}
t0=$SECONDS
mkdir -p "$P_BUILD_CACHE/logs"
pids=()
names=()
failed=()
# Foreign arches first, so the background builds start before the native one.
ordered=()
for a in "${stale[@]}"; do [[ $a == "$(host_arch)" ]] || ordered+=("$a"); done
for a in "${stale[@]}"; do [[ $a != "$(host_arch)" ]] || ordered+=("$a"); done
for a in "${ordered[@]}"; do
    if [[ $parallel == 1 && $a != "$(host_arch)" ]]; then
        logfile=$P_BUILD_CACHE/logs/$a.log
        log "$a: building in the background (log: $logfile)"
        "$here/build-one.sh" "$a" >"$logfile" 2>&1 &
        pids+=($!)
        names+=("$a")
    else
        "$here/build-one.sh" "$a" || failed+=("$a")
    fi
done
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
        tail -n 1 "$P_BUILD_CACHE/logs/${names[$i]}.log" >&2
    else
        log "${names[$i]}: FAILED; last lines of $P_BUILD_CACHE/logs/${names[$i]}.log:"
        tail -n 40 "$P_BUILD_CACHE/logs/${names[$i]}.log" >&2
        failed+=("${names[$i]}")
    fi
done
[[ ${#failed[@]} -eq 0 ]] || die "failed to build: ${failed[*]}"
log "built ${stale[*]} in $((SECONDS - t0))s; manifest: p/agents/manifest.json"
