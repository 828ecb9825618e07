"""A foreign-architecture SSH worker without Python, for end-to-end tests.

`start_worker(arch, scratch)` takes the cached minimal Debian rootfs of that
architecture (openssh-server, tmux, rsync, no python3; made by
`build/rootfs.sh <arch> worker`), puts a throw-away overlay on it, mounts
/proc and /dev, and starts its own `sshd` in a chroot through qemu-user
(binfmt_misc) on a random loopback port.  The caller gets an ssh_config file
and a Host alias that log in as root with a fresh key and a pinned host key.
Stopping it kills every process whose root is that chroot (sshd, the agent,
tmux), unmounts everything and deletes the overlay.

Needs root, binfmt_misc with qemu handlers and network access to a Debian
mirror the first time (the rootfs is cached under /var/cache/p-build).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The loopback sshd harness the end-to-end tests use: keys, ports, Host entries.
sys.path.insert(0, str(REPO / "tests"))
from sshd_worker import free_port, host_entry, keygen, wait_for_sshd  # noqa: E402

CACHE = Path(os.environ.get("P_BUILD_CACHE", "/var/cache/p-build"))
SSHD_START_TIMEOUT = 180.0

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd-p-test.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
MaxSessions 64
MaxStartups 64
PrintMotd no
LoginGraceTime 300
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


@dataclass
class Worker:
    arch: str
    alias: str
    ssh_config: Path
    root: Path  # the worker's filesystem as seen from the host
    port: int
    log: Path

    def ssh(self, command: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the worker through plain ssh."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", self.alias, command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )


def run(*cmd: str, timeout: float = 600.0) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


# Glue between new guest userlands and the host's qemu-user (not part of
# the product: real machines need none of it).  The shim is loaded into
# every process of the worker through /etc/ld.so.preload:
# * qemu-user cannot install a guest's seccomp filter (prctl(PR_SET_SECCOMP)
#   fails with EINVAL).  OpenSSH 9.x only logs that; OpenSSH 10's sshd-auth
#   treats it as fatal, so every login to the sid (riscv64) worker failed.
#   The shim reports success for PR_SET_SECCOMP.
# * glibc >= 2.42 implements tcgetattr/tcsetattr with the TCGETS2/TCSETS2
#   ioctls, which qemu-user 7.2/8.2 (Debian bookworm, Ubuntu 24.04) do not
#   emulate (ENOSYS): tmux's pane child then exits at once and no job runs.
#   The shim implements both with the classic TCGETS/TCSETS* ioctls.
SECCOMP_SHIM_C = r"""
#define _GNU_SOURCE
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

int prctl(int option, ...)
{
    va_list ap;
    unsigned long a2, a3, a4, a5;
    va_start(ap, option);
    a2 = va_arg(ap, unsigned long);
    a3 = va_arg(ap, unsigned long);
    a4 = va_arg(ap, unsigned long);
    a5 = va_arg(ap, unsigned long);
    va_end(ap);
    if (option == PR_SET_SECCOMP)
        return 0;
    return (int)syscall(SYS_prctl, option, a2, a3, a4, a5);
}

/* The kernel's struct termios of asm-generic (aarch64, riscv64). */
struct kernel_termios {
    unsigned int c_iflag, c_oflag, c_cflag, c_lflag;
    unsigned char c_line;
    unsigned char c_cc[19];
};

#define K_TCGETS 0x5401
#define K_TCSETS 0x5402
#define K_CBAUD 0010017
#define K_BOTHER 0010000
#define K_B38400 0000017

int tcgetattr(int fd, struct termios *t)
{
    struct kernel_termios k;
    if (syscall(SYS_ioctl, fd, K_TCGETS, &k) != 0)
        return -1;
    memset(t, 0, sizeof(*t));
    t->c_iflag = k.c_iflag;
    t->c_oflag = k.c_oflag;
    t->c_cflag = k.c_cflag;
    t->c_lflag = k.c_lflag;
    t->c_line = k.c_line;
    memcpy(t->c_cc, k.c_cc, sizeof(k.c_cc));
    t->c_ispeed = t->c_ospeed = 38400;
    return 0;
}

int tcsetattr(int fd, int action, const struct termios *t)
{
    struct kernel_termios k;
    memset(&k, 0, sizeof(k));
    k.c_iflag = t->c_iflag;
    k.c_oflag = t->c_oflag;
    k.c_cflag = t->c_cflag;
    if ((k.c_cflag & K_CBAUD) == K_BOTHER || (k.c_cflag & K_CBAUD) == 0)
        k.c_cflag = (k.c_cflag & ~K_CBAUD) | K_B38400;
    k.c_lflag = t->c_lflag;
    k.c_line = t->c_line;
    memcpy(k.c_cc, t->c_cc, sizeof(k.c_cc));
    if (action < 0 || action > 2)
        action = 0;
    return (int)syscall(SYS_ioctl, fd, K_TCSETS + action, &k);
}
"""
SHIM_NAME = "p-test-qemu-shim.so"


def seccomp_shim(arch: str) -> Path:
    """The shim compiled for `arch`, using the gcc of that arch's build
    rootfs (the one `make agents` uses; cached)."""
    shim = CACHE / "shims" / f"qemu-shim-{hashlib.sha256(SECCOMP_SHIM_C.encode()).hexdigest()[:12]}-{arch}.so"
    if shim.is_file():
        return shim
    out = run("bash", str(REPO / "build" / "rootfs.sh"), arch, "build", timeout=3600.0)
    build_root = Path(out.strip().splitlines()[-1])
    work = build_root / "tmp" / f"p-shim-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "shim.c").write_text(SECCOMP_SHIM_C)
        inside = "/" + str(work.relative_to(build_root))
        run("chroot", str(build_root), "gcc", "-shared", "-fPIC", "-O2", "-o", f"{inside}/shim.so",
            f"{inside}/shim.c")
        shim.parent.mkdir(parents=True, exist_ok=True)
        tmp = shim.with_suffix(".tmp")
        shutil.copyfile(work / "shim.so", tmp)
        os.replace(tmp, shim)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return shim


def worker_rootfs(arch: str) -> Path:
    """The cached Python-less rootfs for `arch`, built on first use."""
    out = run("bash", str(REPO / "build" / "rootfs.sh"), arch, "worker", timeout=3600.0)
    return Path(out.strip().splitlines()[-1])


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_all(path: Path) -> None:
    for _ in range(3):
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def processes_in(root: Path) -> list[int]:
    """PIDs whose filesystem root is `root` (i.e. running in that chroot)."""
    target = str(root.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "root") == target:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def kill_chroot_processes(root: Path, grace: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_in(root)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while processes_in(root) and time.monotonic() < deadline:
            time.sleep(0.1)


def _overlay(lower: Path, scratch: Path) -> Path:
    """A writable view of `lower`; changes land in `scratch`."""
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "root"
    for directory in (upper, work, merged):
        directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:  # no overlayfs here: fall back to a copy
        shutil.rmtree(merged)
        run("cp", "-a", str(lower), str(merged))
    return merged


def _unlock_root(root: Path) -> None:
    """Key-only root login needs an unlocked (not "!") password field."""
    shadow = root / "etc" / "shadow"
    lines = shadow.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root":
            fields[1] = "*"
            lines[i] = ":".join(fields)
    shadow.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def start_worker(arch: str, scratch: Path) -> Iterator[Worker]:
    """Run a Python-less `arch` worker; see the module docstring."""
    lower = worker_rootfs(arch)
    # The overlay's upper dir must not itself be on overlayfs; pytest's tmp
    # dir may be, so keep the chroot under the build cache.
    run_dir = CACHE / "run" / f"worker-{arch}-{os.getpid()}"
    if run_dir.exists():
        unmount_all(run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    root = _overlay(lower, run_dir)
    proc: subprocess.Popen[bytes] | None = None
    try:
        if any((root / "usr" / "bin").glob("python3*")):
            raise RuntimeError(f"{lower} has python3; the worker must lack it")
        for sub in ("proc", "dev"):
            (root / sub).mkdir(exist_ok=True)
        run("mount", "-t", "proc", "proc", str(root / "proc"))
        run("mount", "--rbind", "/dev", str(root / "dev"))
        run("mount", "--make-rslave", str(root / "dev"))
        (root / "run" / "sshd").mkdir(parents=True, exist_ok=True)
        _unlock_root(root)

        scratch.mkdir(parents=True, exist_ok=True)
        key = scratch / "id_ed25519"
        public_key = keygen(str(key))
        ssh_dir = root / "root" / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        ssh_dir.chmod(0o700)
        (ssh_dir / "authorized_keys").write_text(public_key + "\n")
        (ssh_dir / "authorized_keys").chmod(0o600)

        port = free_port()
        (root / "etc" / "ssh" / "sshd_config.p-test").write_text(SSHD_CONFIG.format(port=port))
        host_key = (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
        known_hosts = scratch / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        alias = f"p-qemu-{arch}"
        ssh_config = scratch / "ssh_config"
        # Everything runs under qemu-user: slow handshakes are normal here.
        slow = "    ConnectTimeout 120\n    ServerAliveInterval 30\n    ServerAliveCountMax 10\n"
        ssh_config.write_text(host_entry(alias, key=str(key), known_hosts=str(known_hosts), port=port,
                                         user="root", extra=slow))
        shutil.copyfile(seccomp_shim(arch), root / "usr" / "local" / "lib" / SHIM_NAME)
        (root / "etc" / "ld.so.preload").write_text(f"/usr/local/lib/{SHIM_NAME}\n")
        log = scratch / f"sshd-{arch}.log"
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                ["chroot", str(root), "/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config.p-test"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        wait_for_sshd(port, proc, SSHD_START_TIMEOUT, f"see {log}")
        yield Worker(arch=arch, alias=alias, ssh_config=ssh_config, root=root, port=port, log=log)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        kill_chroot_processes(root)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        unmount_all(run_dir)
        if not mounts_under(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    """Manual use: `python3 qemu-tests/worker.py aarch64` keeps a worker up."""
    import sys
    import tempfile

    arch = sys.argv[1] if len(sys.argv) > 1 else "aarch64"
    with tempfile.TemporaryDirectory() as scratch, start_worker(arch, Path(scratch)) as worker:
        print(f"ssh -F {worker.ssh_config} {worker.alias}   (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
