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
export P_AGENTS_DIR=${P_AGENTS_DIR:-$(cd "$here/.." && pwd)/p/agents}
trap 'rm -rf "$P_BUILD_SRC"' EXIT
version=$(agents_py version)
stale=()
results=()  # arch=cached|rebuilt|FAILED:seconds, for the closing table
for a in "${arches[@]}"; do
    if [[ ${P_BUILD_FORCE:-0} != 1 ]] && agents_py is-fresh "$a"; then
        log "$a: p-agent $version is up to date"
        results+=("$a=cached:0")
    else
        stale+=("$a")
    fi
done
if [[ ${#stale[@]} -eq 0 ]]; then
    agents_py table "${results[@]}" >&2
    exit 0
fi

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
# Progress of the background builds: each one's newest log line, when it
# changes (a rootfs from nothing takes minutes under qemu).
declare -A shown=()
building() {
    local pid
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done
    return 1
}
while [[ ${#pids[@]} -gt 0 ]] && building; do
    for name in "${names[@]}"; do
        line=$(tail -n 1 "$P_BUILD_CACHE/logs/$name.log" 2>/dev/null | cut -c1-160)
        if [[ -n $line && $line != "${shown[$name]:-}" ]]; then
            shown[$name]=$line
            printf '  [%s] %s\n' "$name" "$line" >&2
        fi
    done
    sleep 5
done
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        log "${names[$i]}: FAILED; last lines of $P_BUILD_CACHE/logs/${names[$i]}.log:"
        tail -n 40 "$P_BUILD_CACHE/logs/${names[$i]}.log" >&2
        failed+=("${names[$i]}")
    fi
done
for a in "${stale[@]}"; do
    if [[ " ${failed[*]} " == *" $a "* ]]; then
        results+=("$a=FAILED:-")
    else
        results+=("$a=rebuilt:$(cat "$P_BUILD_CACHE/logs/$a.seconds" 2>/dev/null || echo -)")
    fi
done
agents_py table "${results[@]}" >&2
[[ ${#failed[@]} -eq 0 ]] || die "failed to build: ${failed[*]}"
log "built ${stale[*]} in $((SECONDS - t0))s; manifest: p/agents/manifest.json"
