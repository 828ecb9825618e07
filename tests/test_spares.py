"""Resyncs that come faster than a spare copy is made (issue 13): several
runs at once and back to back from one directory each get exactly the
synced tree, in a workdir of their own, whatever spares the worker kept."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import P_BIN, PClient
from helpers import eventually

LIST = "ls -A | sort | tr '\\n' ' '; echo; cat a; echo written > by-job"


def runs_at_once(p: PClient, count: int) -> list[str]:
    runs = [subprocess.Popen([P_BIN, "--", LIST], env=p.env, cwd=p.workdir, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    results = [(run.wait(timeout=180), *run.communicate()) for run in runs]
    assert [err for code, _, err in results if code != 0] == []
    return [out for _, out, _ in results]


def settled(p: PClient) -> bool:
    """No spare copy in flight on the worker."""
    spares = p.worker_home("w1") / ".p" / "spares"
    return not [entry for entry in spares.iterdir() if ".tmp-" in entry.name]


def test_runs_at_once_and_back_to_back_each_get_exactly_the_synced_tree(p1: PClient) -> None:
    (p1.workdir / ".gitignore").write_text("ignored.txt\n")
    (p1.workdir / "ignored.txt").write_text("never synced\n")
    for name in ("a", "b", "c"):
        (p1.workdir / name).write_text(f"{name}0\n")
    assert p1("--", LIST, check=True).stdout == ".gitignore a b c \na0\n"
    eventually(lambda: settled(p1), timeout=60)
    for round_ in range(1, 4):
        # Each round deletes a file and changes one; jobs wrote into their
        # own workdirs, which must not reach the next job.
        (p1.workdir / ("b" if round_ == 1 else "c")).unlink(missing_ok=True)
        (p1.workdir / "a").write_text(f"a{round_}\n")
        # Another second, as an edit by hand would be: rsync's quick check
        # (size and mtime in seconds) cannot see a same-size change within one.
        os.utime(p1.workdir / "a", (time.time() + round_, time.time() + round_))
        expected = ".gitignore a \n" if round_ > 1 else ".gitignore a c \n"
        outputs = runs_at_once(p1, 4)
        assert outputs == [expected + f"a{round_}\n"] * 4, outputs
        # Back to back: the next starts the moment the previous returns.
        for _ in range(2):
            assert p1("--", LIST, check=True).stdout == expected + f"a{round_}\n"
        eventually(lambda: settled(p1), timeout=60)
    # Every job had a directory of its own: no two share a file.
    workdirs = p1.worker_home("w1") / ".p" / "workdirs"
    inodes = [(workdir / "a").stat().st_ino for workdir in workdirs.iterdir() if (workdir / "a").exists()]
    assert len(inodes) == len(set(inodes)) >= 19


def test_a_spare_changed_on_the_worker_is_not_trusted(p1: PClient) -> None:
    (p1.workdir / "data").write_text("original\n")
    p1("--", "true", check=True)
    eventually(lambda: settled(p1), timeout=60)
    spares = [entry for entry in (p1.worker_home("w1") / ".p" / "spares").iterdir()]
    for spare in spares:
        if (spare / "data").exists():
            # Same size and, restored, the same mtime: rsync's quick check
            # alone would trust it.
            before = (spare / "data").stat()
            (spare / "data").write_text("tampered\n")
            os.utime(spare / "data", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert p1("--", "cat data", check=True).stdout == "original\n"
