"""Issue 17, the worker side: what `p` promises when the worker's own files
cannot be trusted (pid files), live on other filesystems, fill a disk, are
left half-synced, or could be read by others. Real workers, real `p`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import P_BIN, PClient
from helpers import eventually, job_dir, one_line_error
from p_agent.jobs import ORPHAN_AGE, Jobs
from test_agent_units import FakeExecutor
from test_interactive import Screen

from p_protocol import VERSION
from p_protocol.layout import Layout


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


def stream_to_a_full_disk(p1: PClient, jobs: Path, *, reserved_space: bool) -> tuple[int, str]:
    """A streaming `p -n -- ...` whose job fills the disk under ~/.p/jobs
    while it runs; without ``reserved_space``, as on a filesystem where the
    space reserved for the job's end is no use (copy-on-write). Its exit
    status and stderr."""
    process = subprocess.Popen([P_BIN, "-n", "--", "echo started; sleep 2; exit 3"], env=p1.env,
                               cwd=p1.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        if not reserved_space:
            for reserved in jobs.glob("*/pending/*"):
                reserved.unlink()
        fill(jobs)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    return process.returncode, stderr


def test_a_job_that_ends_on_a_full_disk_keeps_its_exit_status(p1: PClient) -> None:
    jobs = p1.worker_home("w1") / ".p" / "jobs"
    with small_filesystem(jobs, p1.sshd.workers["w1"].user):
        code, stderr = stream_to_a_full_disk(p1, jobs, reserved_space=True)
        assert code == 3, stderr
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


# -- 6: pid files are not trusted -------------------------------------------

SOURCES = Path(__file__).resolve().parent.parent


def as_worker(p: PClient, worker: str, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    spec = p.sshd.workers[worker]
    return subprocess.run(["runuser", "-u", spec.user, "--", "env", f"HOME={spec.home}", *argv],
                          capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def give(p: PClient, worker: str, path: Path, text: str) -> None:
    """Write ``path`` as the worker's user would have."""
    path.write_text(text)
    shutil.chown(path, p.sshd.workers[worker].user, p.sshd.workers[worker].user)
    path.chmod(0o600)


def agent_pid(home: Path, version: str = VERSION) -> int:
    pid = int((home / ".p/run" / f"agent-{version}.pid").read_text())
    assert "p_agent" in Path(f"/proc/{pid}/cmdline").read_text() or "p-agent" in Path(
        f"/proc/{pid}/cmdline").read_text()
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def start_agent_of_version(p: PClient, worker: str, version: str) -> Path:
    """An agent of another release, as another client would have started it:
    these sources with another VERSION, run from the worker user's home."""
    home = p.worker_home(worker)
    copy = home / f"agent-{version}"
    shutil.copytree(SOURCES / "agent" / "p_agent", copy / "p_agent")
    shutil.copytree(SOURCES / "p_protocol", copy / "p_protocol")
    init = copy / "p_protocol" / "__init__.py"
    init.write_text(init.read_text().replace(f'VERSION = "{VERSION}"', f'VERSION = "{version}"'))
    subprocess.run(["chown", "-R", p.sshd.workers[worker].user, str(copy)], check=True)
    started = as_worker(p, worker, f"PYTHONPATH={copy}", "python3", "-m", "p_agent", "serve", "--detach",
                        cwd=str(home), timeout=30)
    assert started.returncode == 0, started.stderr
    return home / ".p" / "run" / f"agent-{version}.sock"


def ask(socket_path: Path, op: str, **fields: object) -> dict[str, object]:
    """One request to an agent's socket, as its own client sends it."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(30)
        conn.connect(str(socket_path))
        conn.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        reply: dict[str, object] = json.loads(conn.makefile("rb").readline())
    assert reply["ok"] is True, reply
    return reply


def stop_agent(home: Path, signum: int = signal.SIGTERM) -> None:
    pid = agent_pid(home)
    os.kill(pid, signum)
    eventually(lambda: not alive(pid))


def test_a_stale_pid_file_naming_a_job_is_removed_not_obeyed(p1: PClient) -> None:
    home = p1.worker_home("w1")
    job = p1("-n", "-d", "--", "sleep 300", check=True).stdout.strip()
    pgid = job_dir(home, job) / "pgid"
    eventually(lambda: pgid.exists() and pgid.read_text().strip())
    job_pid = int(pgid.read_text())
    # The agent dies without cleaning up (OOM killer, power cut); its pid is
    # reused, here by the job itself, and so is a pid file of another version.
    stop_agent(home, signal.SIGKILL)
    run = home / ".p" / "run"
    give(p1, "w1", run / f"agent-{VERSION}.pid", f"{job_pid}\n")
    give(p1, "w1", run / "agent-0.0.1.pid", f"{job_pid}\n")
    p1.close_masters()
    result = p1("-n", "--", "echo", "works")
    assert result.stdout == "works\n", result.stderr
    assert alive(job_pid), "a stale pid file was obeyed: the job was killed"
    assert not (run / "agent-0.0.1.pid").exists()
    assert agent_pid(home) != job_pid
    assert {job["id"]: job["status"] for job in p1.jobs()}[job] == "running"
    p1("stop", "--grace", "0", job, check=True)


def test_an_agent_of_this_version_that_does_not_answer_is_still_replaced(p1: PClient) -> None:
    home = p1.worker_home("w1")
    old = agent_pid(home)
    # Alive and holding its pid file, but unreachable: its socket is gone.
    (home / ".p" / "run" / f"agent-{VERSION}.sock").unlink()
    p1.close_masters()
    result = p1("-n", "--", "echo", "works")
    assert result.stdout == "works\n", result.stderr
    eventually(lambda: not alive(old))
    assert agent_pid(home) != old


def test_an_agent_of_another_version_keeps_serving_its_jobs(p1: PClient) -> None:
    home = p1.worker_home("w1")
    other = start_agent_of_version(p1, "w1", "0.0.9")
    other_pid = agent_pid(home, "0.0.9")
    assert ask(other, "hello")["version"] == "0.0.9"
    job = uuid.uuid4().hex
    try:
        ask(other, "start", id=job, spec={"command": "sleep 300"}, cwd="~/elsewhere", worker="w1", cols=80, rows=24,
            tty=False, attach=False)
        # This client's agent is gone (idle exit), so its next command starts it.
        stop_agent(home)
        p1.close_masters()
        assert p1("-n", "--", "echo", "works").stdout == "works\n"
        # The other version's agent and its job were left alone...
        assert alive(other_pid)
        jobs = ask(other, "status", ids=[job])["jobs"]
        assert jobs[job]["state"] == "running"  # type: ignore[index]
        # ...and it still serves its client: output, stop.
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(30)
            conn.connect(str(other))
            conn.sendall(json.dumps({"op": "logs", "id": job, "offset": 0, "follow": False}).encode() + b"\n")
            assert json.loads(conn.makefile("rb").readline())["ok"] is True
        stopped = ask(other, "stop", id=job, grace=0)["job"]
        assert stopped["state"] == "stopped"  # type: ignore[index]
        # Both agents are still there, each answering its own clients.
        assert alive(other_pid) and alive(agent_pid(home))
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int((job_dir(home, job) / "pgid").read_text()), signal.SIGKILL)
        if alive(other_pid):
            os.kill(other_pid, signal.SIGTERM)
            eventually(lambda: not alive(other_pid))


# -- 7: scratch space -----------------------------------------------------------


def spare_ready(root: Path) -> bool:
    return any(not entry.name.count(".tmp-") for entry in root.iterdir())


def test_workdirs_on_another_filesystem_still_reuse_the_last_sync(p1: PClient) -> None:
    home = p1.worker_home("w1")
    (p1.workdir / "data.txt").write_text("one\n")
    # The user mounted a disk of its own over the workdirs.
    with small_filesystem(home / ".p" / "workdirs", p1.sshd.workers["w1"].user, "64m"):
        first = p1("--", "cat data.txt")
        assert first.stdout == "one\n", first.stderr
        eventually(lambda: spare_ready(home / ".p" / "spares"))
        (p1.workdir / "data.txt").write_text("second\n")
        (p1.workdir / "more.txt").write_text("more\n")
        second = p1("--", "cat data.txt more.txt")
        assert second.returncode == 0, second.stderr
        assert second.stdout == "second\nmore\n"


def test_a_workers_scratch_space_holds_its_workdirs_and_spares(p1: PClient) -> None:
    home = p1.worker_home("w1")
    user = p1.sshd.workers["w1"].user
    scratch = home / "scratch"
    scratch.mkdir()
    shutil.chown(scratch, user, user)
    try:
        with small_filesystem(scratch, user, "64m"):
            running = p1("-n", "-d", "--", "sleep 60", check=True).stdout.strip()
            assert "once they have ended" in one_line_error(p1("worker", "set", "w1", "--scratch", str(scratch)))
            p1("stop", "--grace", "0", running, check=True)
            placed = p1("worker", "set", "w1", "--scratch", str(scratch))
            assert placed.returncode == 0, placed.stderr
            assert f"in {scratch} (" in placed.stderr and "MiB free" in placed.stderr
            (p1.workdir / "data.txt").write_text("one\n")
            assert p1("--", "cat data.txt").stdout == "one\n"
            eventually(lambda: spare_ready(scratch / "spares"))
            (p1.workdir / "data.txt").write_text("second\n")
            job = p1("-d", "--", "cat data.txt", check=True).stdout.strip()
            assert p1("wait", job).returncode == 0
            assert (scratch / "workdirs" / job / "data.txt").read_text() == "second\n"
            assert (home / ".p" / "workdirs").resolve() == scratch / "workdirs"
            assert (home / ".p" / "spares").resolve() == scratch / "spares"
            # Every client sees it: the setting is on the worker.
            listing = p1("worker", "ls", "--check")
            assert listing.returncode == 0, listing.stderr
            header, _, row = listing.stdout.splitlines()[:3]
            assert header.split()[-4:] == ["ARCH", "SCRATCH", "FREE", "STATUS"]
            assert str(scratch) in row and "MiB" in row
            # Back home: the workdirs come along.
            back = p1("worker", "set", "w1", "--scratch", "~/.p")
            assert back.returncode == 0, back.stderr
            assert not (home / ".p" / "workdirs").is_symlink()
            assert (home / ".p" / "workdirs" / job / "data.txt").read_text() == "second\n"
    finally:
        for name in ("workdirs", "spares"):
            path = home / ".p" / name
            if path.is_symlink():
                path.unlink()
                path.mkdir(mode=0o700)
                shutil.chown(path, user, user)


# -- 10: interrupted syncs --------------------------------------------------------


def client_rsyncs(p: PClient) -> list[str]:
    """Command lines of rsync processes this client started (they name its project)."""
    out = subprocess.run(["ps", "-e", "-ww", "-o", "args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith("rsync ") and str(p.workdir) in line]


def worker_rsyncs(p: PClient, worker: str) -> list[int]:
    out = subprocess.run(["ps", "-u", p.sshd.workers[worker].user, "-o", "pid=,args="], capture_output=True,
                         text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "rsync --server" in line]


def test_a_sync_cut_short_by_a_killed_client_leaves_nothing_behind(p1: PClient) -> None:
    workdirs = p1.worker_home("w1") / ".p" / "workdirs"
    for index in range(40):
        with open(p1.workdir / f"big-{index}", "wb") as out:
            out.write(os.urandom(1 << 16) * 160)  # 10 MiB, not sparse
    before = set(os.listdir(workdirs))
    process = subprocess.Popen([P_BIN, "--", "true"], env=p1.env, cwd=p1.workdir, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stopped: list[int] = []
    try:
        new = eventually(lambda: set(os.listdir(workdirs)) - before, interval=0.01)
        (job,) = new  # type: ignore[misc]
        eventually(lambda: any((workdirs / job).iterdir()), interval=0.01)
        # Hold the transfer mid-way (the worker's rsync paused), so the
        # client's rsync cannot finish by itself.
        stopped = worker_rsyncs(p1, "w1")
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        process.kill()  # as SIGKILL, the OOM killer or a closed laptop would
        process.wait()
        assert process.returncode == -signal.SIGKILL, "the sync ended before the client was killed"
        # Its rsync dies with it...
        eventually(lambda: not client_rsyncs(p1), timeout=5)
    finally:
        process.kill()
        process.wait()
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    # ...and the half-synced workdir goes.
    eventually(lambda: not (workdirs / job).exists(), timeout=30)
    # The next run builds on nothing half-made: its workdir is exactly the project.
    (p1.workdir / "big-0").write_bytes(b"changed\n")
    result = p1("--", "cat big-0; ls | wc -l")
    assert result.stdout == "changed\n40\n", result.stderr


def test_left_over_workdirs_go_once_untouched_for_an_hour(tmp_path: Path) -> None:
    jobs = Jobs(Layout(str(tmp_path / ".p")), FakeExecutor())
    jobs.ensure_layout()
    orphan, syncing = (uuid.uuid4().hex for _ in range(2))
    for job_id in (orphan, syncing):
        os.makedirs(os.path.join(jobs.layout.workdir(job_id), "sub"))
    jobs.prepare(syncing, "0123456789abcdef")
    long_ago = time.time() - ORPHAN_AGE - 60
    for job_id in (orphan, syncing):
        # rsync -a sets old mtimes: they must not make a workdir look untouched.
        for path in (jobs.layout.workdir(job_id), os.path.join(jobs.layout.workdir(job_id), "sub")):
            os.utime(path, (long_ago, long_ago))
    half_made = Path(jobs.layout.spares_dir, "0123456789abcdef.tmp-12345678")
    half_made.mkdir()
    os.utime(half_made, (long_ago, long_ago))
    jobs.sweep()
    assert os.path.isdir(jobs.layout.workdir(orphan)) and os.path.isdir(jobs.layout.workdir(syncing))
    assert not half_made.exists()
    jobs.sweep(now=time.time() + ORPHAN_AGE + 60)  # an hour on
    assert not os.path.exists(jobs.layout.workdir(orphan))
    assert os.path.isdir(jobs.layout.workdir(syncing))


def test_a_job_whose_end_cannot_be_recorded_is_lost_with_the_reason(p1: PClient) -> None:
    jobs = p1.worker_home("w1") / ".p" / "jobs"
    with small_filesystem(jobs, p1.sshd.workers["w1"].user):
        # Nothing of the job's end can be written.
        code, stderr = stream_to_a_full_disk(p1, jobs, reserved_space=False)
    assert code == 255
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith("p: job ")
    assert "is lost: disk full on w1" in stderr
