"""The Slurm engine end to end: a real cluster (tests/slurm_cluster.py), its
login node one of the tests' sshd workers, `p` run as a subprocess."""

from __future__ import annotations

import subprocess

from helpers import eventually
from slurm_cluster import SlurmCluster
from sshd_worker import SshdWorkers


def test_cluster_runs_a_login_users_batch_job(slurm: SlurmCluster, sshd: SshdWorkers) -> None:
    # As a user would: logged in to the login node, SLURM_CONF set there.
    submitted = subprocess.run(["ssh", "-F", sshd.ssh_config, "login", "sbatch --parsable --wrap 'exit 3'"],
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    def state() -> str:
        shown = slurm.run("scontrol", "show", "job", job_id).stdout
        return shown if "JobState=FAILED" in shown else ""

    assert "ExitCode=3:0" in str(eventually(state, timeout=30))
