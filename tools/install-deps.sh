#!/usr/bin/env bash
# System packages p needs here: the ssh client and rsync for p itself, plus
# sshd and tmux for the local test/demo worker. Installs only what is missing;
# when nothing is, it needs no root and asks for no sudo.
set -euo pipefail
# sshd and useradd live in sbin, which a normal user's PATH lacks.
sbin_path="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
need=()
command -v ssh >/dev/null || need+=(openssh-client)
PATH=$sbin_path command -v sshd >/dev/null || need+=(openssh-server)
command -v tmux >/dev/null || need+=(tmux)
command -v rsync >/dev/null || need+=(rsync)
# Only root makes throwaway worker users (the tests, and the demo as root).
if [ "$(id -u)" -eq 0 ]; then
    PATH=$sbin_path command -v useradd >/dev/null || need+=(passwd)
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
for extra in "$@"; do
    dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
        echo "install-deps: missing ${need[*]}; install them as root (apt-get install ${need[*]})" >&2
        exit 1
    fi
    sudo="sudo"
fi
echo "installing: ${need[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
