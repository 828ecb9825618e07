#!/usr/bin/env bash
# System packages p needs here: the ssh client and rsync for p itself, plus
# sshd and tmux for the local test/demo worker. Installs only what is missing.
set -euo pipefail
need=()
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v tmux >/dev/null || need+=(tmux)
command -v rsync >/dev/null || need+=(rsync)
command -v useradd >/dev/null || need+=(passwd)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
for extra in "$@"; do
    dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
