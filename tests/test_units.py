"""Unit tests of pieces that need no worker."""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path

import pytest

from p.errors import PError
from p.main import parse_run
from p.output import LogWriter
from p.ssh import split_connection
from p.store import JobRecord, Store
from p_protocol import ProtocolError, checked_job_id, session_name


def test_parse_run_form() -> None:
    assert parse_run(["--", "make", "-j32"]) == {"worker": None, "no_sync": False, "detach": False,
                                                  "assume_yes": False, "words": ["make", "-j32"]}
    assert parse_run(["beefy", "-nd", "--", "htop"]) == {"worker": "beefy", "no_sync": True, "detach": True,
                                                         "assume_yes": False, "words": ["htop"]}
    assert parse_run(["-dy", "--", "make"])["assume_yes"] is True  # type: ignore[index]
    assert parse_run(["ls"]) is None
    assert parse_run(["logs", "--", "x"]) is None  # a verb, not a worker
    assert parse_run(["--help", "--", "x"]) is None
    assert parse_run(["a", "b", "--", "x"]) is None


def test_split_connection() -> None:
    assert split_connection("user@host") == ("user@host", None)
    assert split_connection("user@host:2222") == ("user@host", "2222")
    assert split_connection("alias") == ("alias", None)
    assert split_connection("user@[::1]:22") == ("user@::1", "22")
    assert split_connection("fe80::1") == ("fe80::1", None)
    for bad in ("-oProxyCommand=x", "user@host:port", "a b", ""):
        with pytest.raises(PError):
            split_connection(bad)


def test_job_ids_are_checked_before_reaching_paths() -> None:
    good = uuid.uuid4().hex
    assert checked_job_id(good) == good
    assert session_name(good) == f"p-{good[:8]}"
    for bad in ("../etc", good.upper(), good + "0", "", "a" * 31 + "/"):
        with pytest.raises(ProtocolError):
            checked_job_id(bad)


def test_log_writer_undoes_crlf_across_chunks() -> None:
    out = io.BytesIO()
    writer = LogWriter(out, raw=False)
    for chunk in (b"a\r", b"\nb\r\n", b"c\rd"):
        writer.write(chunk)
    writer.finish()
    assert out.getvalue() == b"a\nb\nc\rd"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    return Store()


def record(job_id: str, command: str = "make") -> JobRecord:
    return JobRecord(id=job_id, worker="w", cwd="~", command=command, started_at=1.0)


def test_find_by_prefix_unique_ambiguous_and_missing(store: Store) -> None:
    store.save(record("ab" + "0" * 30), record("ac" + "0" * 30, "cargo test"))
    assert store.find("ab").id.startswith("ab")
    assert store.find("p-ac").command == "cargo test"  # the tmux session name works too
    with pytest.raises(PError, match="ambiguous: ab0000000000 \\(make\\), ac0000000000 \\(cargo test\\)"):
        store.find("a")
    with pytest.raises(PError, match="no job matches"):
        store.find("ff")
    with pytest.raises(PError, match="not a job id"):
        store.find("../x")


def test_index_is_rebuilt_when_records_change_behind_its_back(store: Store) -> None:
    store.save(record("a" * 32))
    assert [r.id for r in store.all()] == ["a" * 32]
    # A record written by another tool (or a crash before the index update).
    # (The directory's mtime is moved on by hand: two writes within one
    # clock tick of a coarse filesystem would share it.)
    extra = record("b" * 32)
    Path(store.dir, f"{extra.id}.json").write_text(json.dumps(extra.to_dict()))
    _touch(store.dir)
    assert sorted(r.id for r in store.all()) == ["a" * 32, "b" * 32]
    os.unlink(os.path.join(store.dir, f"{'a' * 32}.json"))
    _touch(store.dir)
    assert [r.id for r in store.all()] == ["b" * 32]
    # Damaged files are skipped, not fatal.
    Path(store.dir, f"{'c' * 32}.json").write_text("{not json")
    _touch(store.dir)
    assert [r.id for r in store.all()] == ["b" * 32]


def _touch(directory: str) -> None:
    mtime = os.stat(directory).st_mtime_ns + 1_000_000
    os.utime(directory, ns=(mtime, mtime))
