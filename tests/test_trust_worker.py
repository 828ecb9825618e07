"""Issue 17, the worker side: what `p` promises when the worker's own files
cannot be trusted (pid files), live on other filesystems, fill a disk, are
left half-synced, or could be read by others. Real workers, real `p`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import P_BIN, PClient
from test_interactive import Screen


def _not_private(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Files under ``root`` that are not 0600 (0700 for programs) and
    directories that are not 0700; sockets are left to their directory."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if os.path.join(directory, name) not in skip]
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISDIR(info.st_mode):
                ok = mode == 0o700
            elif stat.S_ISREG(info.st_mode):
                ok = mode in (0o600, 0o700)
            else:
                ok = True
            if not ok:
                found.append(f"{oct(mode)} {path}")
    return found


def test_every_file_p_keeps_on_the_worker_is_private(p1: PClient) -> None:
    (p1.workdir / "data.txt").write_text("synced\n")
    assert p1("--", "echo hi > made-by-job; exit 3").returncode == 3
    tty_job = p1("-n", "-d", "--", "true", check=True).stdout.strip()
    p1("wait", tty_job, check=True)
    root = p1.worker_home("w1") / ".p"
    # Workdirs and spares hold the user's files with the modes they had
    # (programs must stay executable); their directories are private.
    skip = tuple(str(root / name / entry.name) for name in ("workdirs", "spares")
                 for entry in (root / name).iterdir())
    assert _not_private(root, skip) == []
    # The job's own files keep the user's umask, as over `ssh host cmd`.
    (made,) = root.glob("workdirs/*/made-by-job")
    assert stat.S_IMODE(made.stat().st_mode) == 0o644


@contextmanager
def small_filesystem(path: Path, owner: str, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted over ``path`` (owned by ``owner``, 0700)
    for the test's duration only."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "p-test-full", str(path)], check=True)
    try:
        shutil.chown(path, owner, owner)
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)  # a job's `cat` may still hold a file


def fill(directory: Path) -> None:
    """Fill the filesystem of ``directory`` to the last byte."""
    for block in ("64k", "4k", "1"):
        subprocess.run(["dd", "if=/dev/zero", f"of={directory}/fill-{block}", f"bs={block}"],
                       capture_output=True)
    probe = subprocess.run(["dd", "if=/dev/zero", f"of={directory}/probe", "bs=1", "count=1"],
                           capture_output=True, text=True)
    assert "No space left" in probe.stderr, probe.stderr


def test_a_job_that_ends_on_a_full_disk_keeps_its_exit_status(p1: PClient) -> None:
    jobs = p1.worker_home("w1") / ".p" / "jobs"
    with small_filesystem(jobs, p1.sshd.workers["w1"].user):
        process = subprocess.Popen([P_BIN, "-n", "--", "echo started; sleep 2; exit 3"], env=p1.env,
                                   cwd=p1.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "started\n"
            fill(jobs)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait()
        assert process.returncode == 3, stderr
        (job,) = [path for path in jobs.iterdir() if path.is_dir()]
        assert int((job / "exitcode").read_text()) == 3
        float((job / "ended_at").read_text())
        waited = p1("wait", job.name)
        assert waited.returncode == 3, waited.stderr


def test_an_attached_job_that_ends_on_a_full_disk_keeps_its_exit_status(p1: PClient) -> None:
    jobs = p1.worker_home("w1") / ".p" / "jobs"
    screen = Screen(p1)
    try:
        with small_filesystem(jobs, p1.sshd.workers["w1"].user):
            window = screen.start("-n", "--", "echo started; sleep 2; exit 3")
            screen.wait_for(window, "^started")
            fill(jobs)
            screen.wait_for(window, r"--- Job done \[exit 3\]", timeout=20)
            screen.keys(window, "q")
            screen.wait_for(window, "^p-exit=3$", timeout=10)
    finally:
        screen.close()

