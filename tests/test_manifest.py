"""A run with nothing changed since the last sync skips rsync (issue 13,
P13; p/manifest.py): proved by the job's record (0 bytes sent: any rsync
sends its protocol's bytes), and every change, however it hides from
rsync's quick check, still reaches the job. Each job's tree is compared with
what rsync itself makes of the directory locally."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

from conftest import PClient
from helpers import eventually
from p_agent.files import rmtree
from p_agent.spares import Spares

from p import manifest
from p_protocol.layout import Layout

# Every entry with its type, mode and symlink target, then every file's
# content: all a job can tell of its tree. Writes nothing there.
LIST = ("find . -mindepth 1 -printf '%p %y %m %l\\n' | LC_ALL=C sort; "
        "find . -type f | LC_ALL=C sort | while read -r f; do printf '%s=%s\\n' \"$f\" \"$(cat \"$f\")\"; done")


def expected(p: PClient, tmp: Path, excludes: tuple[str, ...] = ()) -> str:
    """What LIST shows of the directory as a sync should make it: rsync's own
    copy of it, with p's filter, made here."""
    copy = tmp / f"expected-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rsync", "-a", *[f"--exclude={e}" for e in excludes], "--filter=:- .gitignore",
                    f"{p.workdir}/", f"{copy}/"], check=True)
    shown = subprocess.run(["sh", "-c", LIST], cwd=copy, capture_output=True, text=True, check=True).stdout
    shutil.rmtree(copy)
    return shown


def spares(p: PClient) -> list[Path]:
    """The spares of ``p``'s directory on w1 (other tests' are there too),
    and their copies in flight."""
    key = hashlib.sha256(f"{socket.gethostname()}\0{os.path.realpath(p.workdir)}".encode()).hexdigest()[:16]
    return [entry for entry in (p.worker_home("w1") / ".p" / "spares").iterdir() if entry.name.startswith(key)]


def spare_ready(p: PClient) -> bool:
    """A spare is ready on w1 and no copy is in flight."""
    entries = spares(p)
    return bool(entries) and not [entry for entry in entries if ".tmp-" in entry.name]


def run(p: PClient, *flags: str) -> tuple[str, int]:
    """LIST in a job once the last job's spare is ready: its output, and the
    bytes its sync sent."""
    eventually(lambda: spare_ready(p), timeout=60)
    before = {job["id"] for job in p.jobs()}
    out = p(*flags, "--", LIST, check=True).stdout
    [job] = [job for job in p.jobs() if job["id"] not in before]
    return out, int(job["sync_bytes"])  # type: ignore[call-overload]


def primed(p: PClient) -> None:
    """A tree synced twice (the first walk may meet files changed too
    recently to vouch for), so that the next run with no change skips."""
    (p.workdir / ".gitignore").write_text("ignored.txt\n")
    (p.workdir / "ignored.txt").write_text("never synced\n")
    (p.workdir / "sub" / "deeper").mkdir(parents=True)
    (p.workdir / "sub" / "deeper" / "data").write_text("1234\n")
    (p.workdir / "keep").write_text("keep\n")
    (p.workdir / "link").symlink_to("keep")
    (p.workdir / "empty").mkdir()
    p("--", "true", check=True)
    run(p)
    out, sent = run(p)
    assert sent == 0 and out == expected(p, p.home), "a run with nothing changed must skip rsync"


def test_a_run_with_nothing_changed_skips_rsync_and_sees_exactly_the_tree(p1: PClient) -> None:
    primed(p1)
    out, sent = run(p1)
    assert sent == 0
    assert out == expected(p1, p1.home)
    assert "./ignored.txt" not in out and "./link l 777 keep" in out and "./empty d" in out
    record = json.loads(p1("show", "--json", p1.jobs()[0]["id"], check=True).stdout)  # type: ignore[arg-type]
    assert (record["sync_files"], record["sync_bytes"]) == (0, 0)
    kept = sorted((p1.home / ".cache" / "p" / "manifests").iterdir())
    assert len(kept) == 2 and all(path.stat().st_mode & 0o777 == 0o600 for path in kept)


def test_a_same_size_rewrite_with_its_mtime_put_back_is_still_sent(p1: PClient) -> None:
    primed(p1)
    data = p1.workdir / "sub" / "deeper" / "data"
    before = data.stat()
    data.write_text("5678\n")
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (data.stat().st_size, data.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    out, sent = run(p1)
    assert "./sub/deeper/data=5678" in out and out == expected(p1, p1.home)
    assert sent > 0


def test_a_deleted_file_is_gone(p1: PClient) -> None:
    primed(p1)
    (p1.workdir / "sub" / "deeper" / "data").unlink()
    out, _ = run(p1)
    assert "data" not in out and out == expected(p1, p1.home)


def test_a_new_empty_directory_and_a_retargeted_symlink_arrive(p1: PClient) -> None:
    primed(p1)
    (p1.workdir / "sub" / "new-empty").mkdir()
    out, _ = run(p1)
    assert "./sub/new-empty d" in out and out == expected(p1, p1.home)
    (p1.workdir / "link").unlink()
    (p1.workdir / "link").symlink_to("sub")
    out, _ = run(p1)
    assert "./link l 777 sub" in out and out == expected(p1, p1.home)


def test_a_chmod_is_carried(p1: PClient) -> None:
    primed(p1)
    (p1.workdir / "keep").chmod(0o600)
    (p1.workdir / "sub" / "deeper").chmod(0o711)
    out, _ = run(p1)
    assert "./keep f 600" in out and "./sub/deeper d 711" in out and out == expected(p1, p1.home)


def test_another_filter_syncs_again(p1: PClient) -> None:
    primed(p1)
    out, sent = run(p1, "--exclude", "keep")
    assert "./keep f" not in out and out == expected(p1, p1.home, ("keep",)) and sent > 0
    out, _ = run(p1)
    assert "./keep f" in out and out == expected(p1, p1.home)


def test_a_spare_changed_on_the_worker_is_not_trusted(p1: PClient) -> None:
    """Edited keeping size and mtime, and the spare's own times touched after
    (so its seal is later than the edit): neither is trusted."""
    primed(p1)
    for touch_seal in (False, True):
        eventually(lambda: spare_ready(p1), timeout=60)
        for spare in spares(p1):
            data = spare / "sub" / "deeper" / "data"
            before = data.stat()
            data.write_text("evil\n")
            os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
            if touch_seal:
                eventually(lambda spare=spare, data=data: resealed(spare, data), interval=0.001)
        out, _ = run(p1)
        assert "evil" not in out and out == expected(p1, p1.home)


def resealed(spare: Path, edited: Path) -> bool:
    """The spare's times set again: its ctime later than the edit's?"""
    os.utime(spare, ns=(spare.stat().st_atime_ns, spare.stat().st_mtime_ns))
    return spare.stat().st_ctime_ns > edited.stat().st_ctime_ns


def test_a_damaged_manifest_costs_an_rsync_only(p1: PClient) -> None:
    primed(p1)
    [header, entries] = sorted((p1.home / ".cache" / "p" / "manifests").iterdir())
    good = header.read_bytes()
    other = {**json.loads(good), "cwd": "/elsewhere"}
    for damaged in (b"\x00garbage\xff", good[:len(good) // 2], json.dumps(other).encode(), b"[]", b""):
        header.write_bytes(damaged)
        out, sent = run(p1)
        assert sent > 0 and out == expected(p1, p1.home), damaged
    out, sent = run(p1)  # the sync that ran kept a sound one again
    assert sent == 0 and out == expected(p1, p1.home)
    # Its entries lost, a change rsync's quick check cannot see is still sent.
    entries.write_bytes(entries.read_bytes()[:100])
    data = p1.workdir / "sub" / "deeper" / "data"
    before = data.stat()
    data.write_text("5678\n")
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    out, sent = run(p1)
    assert "./sub/deeper/data=5678" in out and out == expected(p1, p1.home)


def test_what_a_job_wrote_into_its_workdir_is_absent_from_the_next(p1: PClient) -> None:
    primed(p1)
    eventually(lambda: spare_ready(p1), timeout=60)
    p1("--", "echo written > by-job; echo changed > keep; mkdir -p made; rm -f link", check=True)
    out, _ = run(p1)
    assert out == expected(p1, p1.home)
    assert "by-job" not in out and "./keep=keep" in out and "./link l" in out


def test_a_spare_copied_after_its_job_changed_its_workdir_is_not_exact(tmp_path: Path) -> None:
    """The order the test above cannot force: the job writes before its
    workdir is copied into the spare."""
    layout = Layout(str(tmp_path / ".p"))
    os.makedirs(layout.spares_dir)
    spares = Spares(layout, rmtree)
    key = "0123456789abcdef"
    for job_writes in (False, True):
        job_id = uuid.uuid4().hex
        workdir = Path(layout.workdir(job_id))
        workdir.mkdir(parents=True)
        (workdir / "synced").write_text("synced\n")
        mark = spares.mark()
        assert mark is not None and mark > workdir.stat().st_ctime_ns
        if job_writes:
            (workdir / "synced").write_text("job's\n")
        spares.copy_from(key, str(workdir), job_id, mark)
        eventually(lambda: os.path.isdir(layout.spare(key)) and not spares.copying, timeout=20)
        taker = uuid.uuid4().hex
        reused, origin = spares.take(key, layout.workdir(taker))
        assert reused and origin == (None if job_writes else job_id)


def test_both_walks_see_what_the_quick_check_would_miss(tmp_path: Path) -> None:
    """GNU find's walk and the one in Python (where there is no GNU find):
    a same-size rewrite with its mtime put back changes the digest and is
    named for removal; an untouched tree walks the same twice."""
    (tmp_path / "sub").mkdir()
    data = tmp_path / "sub" / "data"
    data.write_text("1234\n")
    (tmp_path / "other").write_text("x\n")
    for walk in (manifest._walk_by_find, manifest._walk_here):
        first, again = walk(str(tmp_path), 0), walk(str(tmp_path), 0)
        assert first is not None and again is not None and first.racy
        assert first.digest == again.digest
        before = data.stat()
        data.write_text(data.read_text()[::-1])
        os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
        now = walk(str(tmp_path), 0)
        assert now is not None and now.digest != first.digest
        assert manifest.quick_check_blind(first.entries, now) == [b"sub/data"]
