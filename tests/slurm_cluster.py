"""A real single-node Slurm cluster on loopback, for the tests and the bench.

Debian's packages (slurmctld, slurmd, munge), no systemd: a generated munge
key and ``munged`` on a private socket, a ``slurm.conf`` of our own in a
private directory, ``slurmctld -D`` and ``slurmd -D`` in the background with
private ports, state and spool directories, and a node name of their own, so
two test runs on one machine never meet. Users find the cluster through
``SLURM_CONF`` (the tests' sshd sets it for every login), never through
/etc/slurm. ``stop`` ends the daemons by the pids it started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from sshd_worker import free_ports

# Where Debian puts the daemons; the client tools are on PATH.
SBIN = "/usr/sbin"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENT_TOOLS = ("sbatch", "squeue", "scancel", "scontrol", "srun", "sinfo")
READY_WITHIN = 60.0


class ClusterError(RuntimeError):
    """The cluster could not start; the message carries the daemon's log."""


def missing_tools() -> list[str]:
    """What this machine lacks to run a cluster (`apt-get install slurmctld
    slurmd slurm-client munge`)."""
    missing = [name for name in DAEMONS if not os.access(os.path.join(SBIN, name), os.X_OK)]
    return missing + [name for name in CLIENT_TOOLS if shutil.which(name) is None]


SLURM_CONF = """\
# A single-node test cluster (tests/slurm_cluster.py); private ports and dirs.
ClusterName={cluster}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root}/ctld-state
SlurmdSpoolDir={root}/slurmd-spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# Schedule a batch job when it comes, not up to 3 s later (the default).
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
ReturnToService=2
# A cancelled or timed-out job is killed 2 s after its SIGTERM, not 30.
KillWait=2
InactiveLimit=0
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={slurmd_port} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=main Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """``start()`` it; ``conf`` is what SLURM_CONF must name for its users."""

    root: str
    node: str = field(default_factory=lambda: f"pn{secrets.token_hex(3)}")
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> str:
        return os.path.join(self.root, "slurm.conf")

    @property
    def munge_socket(self) -> str:
        return os.path.join(self.root, "munge", "munge.socket")

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": self.conf}

    def start(self) -> SlurmCluster:
        missing = missing_tools()
        if missing:
            raise ClusterError(f"missing {', '.join(missing)}: apt-get install slurmctld slurmd slurm-client munge")
        try:
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", [os.path.join(SBIN, "slurmctld"), "-D", "-i", "-f", self.conf])
            self._wait("slurmctld", ["scontrol", "ping"], lambda out: "is UP" in out)
            self._spawn("slurmd", [os.path.join(SBIN, "slurmd"), "-D", "-f", self.conf, "-N", self.node])
            self._wait("slurmd", ["sinfo", "-h", "-N", "-n", self.node, "-o", "%t"],
                       lambda out: out.strip() in ("idle", "mix", "alloc"))
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        # munged insists: key owned by its user and private, directories not
        # writable by others; the socket must be reachable by every user.
        munge_dir = os.path.dirname(self.munge_socket)
        os.makedirs(munge_dir, mode=0o755)
        os.chmod(self.root, 0o755)
        key = os.path.join(munge_dir, "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "wb") as out:
            out.write(os.urandom(1024))
        self._spawn("munged", [os.path.join(SBIN, "munged"), "-F", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={munge_dir}/munged.pid",
                               f"--seed-file={munge_dir}/munged.seed", f"--log-file={munge_dir}/munged.log"],
                    log=f"{munge_dir}/munged.log")
        self._wait("munged", ["munge", "-n", "-S", self.munge_socket], lambda out: out.startswith("MUNGE:"))

    def _write_conf(self) -> None:
        for name in ("ctld-state", "slurmd-spool"):
            os.makedirs(os.path.join(self.root, name), mode=0o755)
        ctld_port, slurmd_port = free_ports(2)
        with open(self.conf, "w") as out:
            out.write(SLURM_CONF.format(cluster=f"p{secrets.token_hex(3)}", host=socket.gethostname().split(".")[0],
                                        ctld_port=ctld_port, slurmd_port=slurmd_port, root=self.root,
                                        munge_socket=self.munge_socket, node=self.node, cpus=self.cpus,
                                        memory=1000))
        os.chmod(self.conf, 0o644)

    def _spawn(self, name: str, argv: list[str], log: str | None = None) -> None:
        with open(log or os.path.join(self.root, f"{name}.out"), "ab") as out:
            self.processes[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                                    stderr=subprocess.STDOUT, env=self.env(),
                                                    start_new_session=True)

    def log(self, name: str) -> str:
        """The tail of a daemon's log, for an error that says why."""
        text = ""
        for path in (os.path.join(self.root, f"{name}.log"), os.path.join(self.root, f"{name}.out"),
                     os.path.join(self.root, "munge", f"{name}.log")):
            try:
                with open(path, errors="replace") as src:
                    text += src.read()[-3000:]
            except OSError:
                pass
        return text

    def _wait(self, name: str, probe: list[str], ready: object) -> None:
        deadline = time.monotonic() + READY_WITHIN
        last = ""
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise ClusterError(f"{name} exited with {process.returncode}:\n{self.log(name)}")
            result = subprocess.run(probe, capture_output=True, text=True, env=self.env(), timeout=30)
            last = (result.stdout + result.stderr).strip()
            if result.returncode == 0 and ready(result.stdout):  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise ClusterError(f"{name} not ready within {READY_WITHIN:.0f}s ({last}):\n{self.log(name)}")

    def run(self, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster, as ``user`` if given."""
        prefix = ["runuser", "-u", user, "--", "env", f"SLURM_CONF={self.conf}"] if user else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, env=self.env(), timeout=60)

    def stop(self) -> None:
        """Every job cancelled (a job's slurmstepd outlives slurmd), then
        every daemon by the pid we started."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--partition=main")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.run("squeue", "-h", "-o", "%i").stdout.strip():
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


if __name__ == "__main__":
    # A cluster to try things by hand: prints SLURM_CONF, stops on Ctrl+C.
    cluster = SlurmCluster(f"/var/tmp/p-slurm-{secrets.token_hex(4)}")
    os.makedirs(cluster.root, mode=0o755)
    cluster.start()
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    try:
        signal.pause()
    finally:
        cluster.stop()
