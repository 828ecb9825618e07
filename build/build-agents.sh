#!/usr/bin/env bash
# `make agents`: build the static p-agent executables that are stale.
#
#   bash build/build-agents.sh [x86_64] [aarch64] [riscv64]   (default: all)
#
# Output: p/agents/p-agent-<arch> and p/agents/manifest.json.  A binary is
# rebuilt only when the hash of its inputs (agent/p_agent, p_protocol and
# build/*) differs from the one recorded in the manifest.  Slow products
# (Debian rootfs per arch, venvs) are cached under $P_BUILD_CACHE
# (default /var/cache/p-build).  Foreign arches build in parallel when
# P_BUILD_PARALLEL=1 (default on machines with >= 2 CPUs); logs of those go
# to $P_BUILD_CACHE/logs/<arch>.log.  Needs root (debootstrap, chroot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=build/lib.sh
. "$here/lib.sh"

arches=("$@")
[[ ${#arches[@]} -gt 0 ]] || arches=("${ALL_ARCHES[@]}")
for a in "${arches[@]}"; do deb_arch "$a" >/dev/null; done
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mount); try: sudo make agents"
if [[ $(host_arch) != x86_64 ]]; then
    log "note: host is $(host_arch); every other arch builds in a rootfs"
fi

version=$(python3 "$here/agents.py" version)
stale=()
for a in "${arches[@]}"; do
    if python3 "$here/agents.py" is-fresh "$a"; then
        log "$a: p-agent $version is up to date"
    else
        stale+=("$a")
    fi
done
[[ ${#stale[@]} -gt 0 ]] || exit 0

parallel=${P_BUILD_PARALLEL:-$([[ $(nproc) -ge 2 ]] && echo 1 || echo 0)}
t0=$SECONDS
mkdir -p "$P_BUILD_CACHE/logs"
pids=()
names=()
failed=()
for a in "${stale[@]}"; do
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
