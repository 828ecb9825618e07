"""Unit tests of pieces that need no worker."""

from __future__ import annotations

import io
import json
import os
import socket
import uuid
from pathlib import Path

import pytest
from p_agent.tmux import session_name

from p.config import Config, Worker
from p.errors import LINK_LOST, PError
from p.main import parse_run
from p.output import LogWriter
from p.ssh import Transport, split_connection
from p.store import JobRecord, Store
from p_protocol import ProtocolError, checked_job_id
from p_protocol.jobspec import JobSpec


def test_parse_run_form() -> None:
    off = {"dry_run_sync": False, "ctrl_c_detaches": False, "notify": False}
    assert parse_run(["--", "make", "-j32"]) == {"worker": None, "no_sync": False, "detach": False,
                                                  "assume_yes": False, **off, "words": ["make", "-j32"]}
    assert parse_run(["beefy", "-nd", "--", "htop"]) == {"worker": "beefy", "no_sync": True, "detach": True,
                                                         "assume_yes": False, **off, "words": ["htop"]}
    assert parse_run(["--ctrl-c-detaches", "--notify", "-p8888", "--exclude=data/", "--", "x"]) == {
        "worker": None, "no_sync": False, "detach": False, "assume_yes": False, "dry_run_sync": False,
        "ctrl_c_detaches": True, "notify": True, "words": ["x"],
        "job_spec": [("port", "8888"), ("exclude", "data/")]}
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


def test_a_script_unanswered_in_time_over_a_master_is_a_lost_link(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A master is up (something listens on its socket), and the worker
    # answers nothing: here an ssh that never returns.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text("#!/bin/sh\nexec sleep 30\n")
    (fake / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    transport = Transport(Config(), Worker("w1", "w1"))
    master = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    master.bind(transport.control_path)
    master.listen()
    try:
        with pytest.raises(PError) as raised:
            transport.run_script("true\n", timeout=0.2)
    finally:
        master.close()
    assert raised.value.exit_code == LINK_LOST
    assert raised.value.message == "worker w1 did not answer within 0.2 s"


def test_short_names_are_sha256_as_ever() -> None:
    """paths.name_digest does not load hashlib, yet names a worker's
    sockets and a directory's spare as earlier versions did: an upgraded
    client finds the master and the spare it left."""
    import hashlib

    from p.paths import name_digest

    for text in ("w1\0user@host:2222\0-F\0/x/ssh_config", "h\0/home/ü/src", ""):
        assert name_digest(text) == hashlib.sha256(text.encode()).hexdigest()[:16]
        assert name_digest(text, 32) == hashlib.sha256(text.encode()).hexdigest()[:32]


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
    return JobRecord(id=job_id, worker="w", cwd="~", spec=JobSpec(command), started_at=1.0)


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


def test_saves_keep_the_index_equal_to_the_records_and_in_order_of_start(store: Store) -> None:
    """A save edits the index's lines in place (only its own are parsed):
    whatever order records come and change in, the index must read as one
    built afresh from the record files."""
    ids = [f"{n:x}" * 32 for n in range(1, 7)]
    store.save(record(ids[0]), record(ids[1]))
    late = JobRecord(id=ids[2], worker="w", cwd="~", spec=JobSpec("late"), started_at=9.0, status="running")
    store.save(late)
    early = JobRecord(id=ids[3], worker="w", cwd="~", spec=JobSpec("early"), started_at=0.5)  # adopted, say
    store.save(early)
    store.save(JobRecord(id=ids[2], worker="w", cwd="~", spec=JobSpec("late"), started_at=9.0, status="done",
                         exit_code=3))
    store.save(JobRecord(id=ids[1], worker="w", cwd="~", spec=JobSpec("moved"), started_at=20.0))
    store.save(record(ids[4]), record(ids[4], "twice in one save"))
    store.delete(ids[0])
    store.delete(ids[5])  # not there: nothing changes
    kept = [(r.id, r.command, r.status) for r in store.all()]
    assert kept == [(ids[3], "early", "running"), (ids[4], "twice in one save", "running"),
                    (ids[2], "late", "done"), (ids[1], "moved", "running")]
    header = json.loads(Path(store.index_path).read_text().splitlines()[0])
    assert header["count"] == 4 and sorted(header["active"]) == sorted([ids[3], ids[4], ids[1]])
    assert store.find(ids[2][:3]).exit_code == 3
    assert sorted((r.id, r.command, r.status) for r in store.rebuild().values()) == sorted(kept)


def test_a_damaged_index_line_is_never_trusted_by_a_save(store: Store) -> None:
    store.save(record("a" * 32), record("b" * 32))
    index = Path(store.index_path)
    lines = index.read_text().splitlines()
    lines[2] = lines[2].replace('"worker":"w"', '"worker":7')  # b's line holds no job now
    index.write_text("\n".join(lines) + "\n")
    store.save(JobRecord(id="b" * 32, worker="w", cwd="~", spec=JobSpec("again"), started_at=1.0))
    assert [(r.id, r.command) for r in store.all()] == [("a" * 32, "make"), ("b" * 32, "again")]
    lines = index.read_text().splitlines()
    index.write_text("\n".join([*lines[:-1], "{not json"]) + "\n")  # in the way of the next job's place
    store.save(JobRecord(id="c" * 32, worker="w", cwd="~", spec=JobSpec("third"), started_at=2.0))
    assert [r.id for r in store.all()] == ["a" * 32, "b" * 32, "c" * 32]
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:-1]) + "\n")  # a line lost: the count says so
    assert [r.id for r in store.all()] == ["a" * 32, "b" * 32, "c" * 32]


def _touch(directory: str) -> None:
    mtime = os.stat(directory).st_mtime_ns + 1_000_000
    os.utime(directory, ns=(mtime, mtime))


def test_the_typer_commands_are_the_verbs() -> None:
    """p/verbs.py lists the verbs once: the fast path refuses them as worker
    names and hands them to typer, so each must be a command there (`help`
    is answered before typer parses anything)."""
    import typer.main

    from p import cli
    from p.verbs import VERBS

    commands = set(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]
    assert commands | {"help"} == set(VERBS)


def test_every_request_has_one_handler_and_a_documented_row() -> None:
    from p_agent.server import Agent

    from p_protocol.wire import SPECS, Op, table

    assert set(SPECS) == set(Op)
    for op in Op:
        assert callable(getattr(Agent, f"on_{op.value}", None)), op
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert table() in doc, "docs/protocol.md's table differs: paste `python3 -m p_protocol.wire` into it"


def test_messages_are_held_to_their_declarations() -> None:
    from p_protocol.wire import Op, check_reply, check_request, decode

    job_id = "0123456789abcdef0123456789abcdef"
    op, fields = check_request({"op": "stop", "id": job_id, "grace": 2})
    assert op is Op.STOP and fields == {"id": job_id, "grace": 2}
    for bad, says in (({"op": "stop", "id": job_id, "grace": 2, "graec": 1}, "unknown field 'graec'"),
                      ({"op": "stop", "id": job_id}, "'grace' is missing"),
                      ({"op": "stop", "id": "../x", "grace": 2}, "'id' must be a job id"),
                      ({"op": "stop", "id": job_id, "grace": True}, "'grace' must be"),
                      ({"op": "stpo"}, "unknown request")):
        with pytest.raises(ProtocolError, match=says):
            check_request(bad)
    view = {"id": job_id, "state": "done", "started_at": 1.5, "ended_at": 2.5, "exit_code": 3, "attachable": False}
    assert check_reply(Op.WAIT, {"job": view})["job"] == view
    for field, value in (("state", "unknown"), ("started_at", "yesterday"), ("exit_code", 1.5)):
        with pytest.raises(ProtocolError, match="'job' must be a job"):
            check_reply(Op.WAIT, {"job": {**view, field: value}})
    with pytest.raises(ProtocolError, match="not JSON"):
        decode(b'{"ended_at": NaN}')
    with pytest.raises(ProtocolError, match="'job' must be a job"):
        check_reply(Op.WAIT, {"job": {**view, "ended_at": decode(b'{"x": 1e400}')["x"]}})


def test_a_reply_about_another_job_is_refused(tmp_path: Path) -> None:
    """A worker that answers about other jobs than asked (confused or lying)
    must not make p record one job's fate as another's."""
    import socket
    import threading

    from p.agent_client import AgentClient
    from p_protocol import PROTOCOL, VERSION
    from p_protocol.wire import Op, decode, encode

    asked, other = uuid.uuid4().hex, uuid.uuid4().hex
    view = {"id": other, "state": "lost", "started_at": None, "ended_at": None, "exit_code": None,
            "attachable": False}
    replies = {"hello": {"ok": True, "version": VERSION, "protocol": PROTOCOL, "home": "/h", "engine": "tmux"},
               "status": {"ok": True, "jobs": {asked: view}},
               "wait": {"ok": True, "job": view}}
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                stream.write(encode(replies[decode(line)["op"]]))
                stream.flush()

    threading.Thread(target=serve, daemon=True).start()
    client = AgentClient(path, "liar")
    try:
        for op, fields in ((Op.STATUS, {"ids": [asked]}), (Op.WAIT, {"id": asked})):
            with pytest.raises(PError, match="worker liar answered about other jobs"):
                client.request(op, **fields)
    finally:
        client.close()
        server.close()


def test_a_reply_left_behind_by_an_unfinished_exchange_is_never_read_as_the_next(tmp_path: Path) -> None:
    """A request cut short (its deadline, Ctrl+C) leaves its reply to come on
    that connection: the next request opens another, so it never takes that
    reply (a `start`'s `job`) for its own (a `status`'s `jobs`)."""
    import contextlib
    import socket
    import threading
    import time

    from p.agent_client import AgentClient
    from p_protocol import PROTOCOL, VERSION
    from p_protocol.wire import Op, decode, encode

    job = uuid.uuid4().hex
    view = {"id": job, "state": "running", "started_at": 1.0, "ended_at": None, "exit_code": None,
            "attachable": False}
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream, contextlib.suppress(OSError):  # the client left
            for line in stream:
                op = decode(line)["op"]
                if op == "wait":
                    time.sleep(0.5)  # answered late, after the client gave up
                reply = {"hello": {"ok": True, "version": VERSION, "protocol": PROTOCOL, "home": "/h",
                                   "engine": "tmux"},
                         "wait": {"ok": True, "job": view},
                         "status": {"ok": True, "jobs": {job: view}}}[op]
                stream.write(encode(reply))
                stream.flush()

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    client = AgentClient(path, "slow")
    try:
        with pytest.raises(PError, match="did not answer in time"):
            client.request(Op.WAIT, id=job, deadline=0.1)
        time.sleep(0.6)  # the late reply is there now, on the old connection
        assert client.request(Op.STATUS, ids=[job])["jobs"] == {job: view}
    finally:
        client.close()
        server.close()


def test_a_job_spec_round_trips_and_refuses_what_it_does_not_declare() -> None:
    from p_protocol.jobspec import parse_duration, parse_size

    spec = JobSpec("make", env={"A": "1"}, secrets=["TOKEN"], timeout=90.0, max_output=10 << 20, gpus=2,
                   sbatch_args=["--qos=low"])
    assert JobSpec.parse(json.loads(json.dumps(spec.to_json()))) == spec
    assert JobSpec.parse({"command": "true"}) == JobSpec("true")
    assert JobSpec.parse({"command": "true", "timeout": None}).timeout is None
    for bad, field in (({"command": "x", "timeout": 0}, "timeout"), ({"command": "x", "gpus": -1}, "gpus"),
                       ({"command": "x", "secrets": ["A", "A"]}, "secrets"), ({"command": "x", "nodes": 1.5}, "nodes"),
                       ({"command": "x", "extra": 1}, "extra"), ({"env": {}}, "command")):
        with pytest.raises(ProtocolError, match=field):
            JobSpec.parse(bad)
    assert [parse_duration(t) for t in ("90s", "15m", "2h", "1h30m", "45", "1.5m")] == [90, 900, 7200, 5400, 45, 90]
    assert [parse_size(t) for t in ("10M", "512k", "2G", "4096", "1.5GiB")] == [
        10 << 20, 512 << 10, 2 << 30, 4096, 3 << 29]
    for bad in ("", "0s", "10x", "-5m", "h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ("", "0", "10Q", "-1M"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_run_form_reads_job_spec_flags_in_order() -> None:
    options = parse_run(["w1", "-g2", "--timeout", "15m", "--max-output=10M", "-n", "--sbatch-arg", "--qos=x",
                         "--", "make"])
    assert options is not None and options["worker"] == "w1" and options["no_sync"]
    assert options["job_spec"] == [("gpus", "2"), ("timeout", "15m"), ("max_output", "10M"),
                                   ("sbatch_args", "--qos=x")]


def test_text_from_a_worker_or_a_file_never_reaches_the_terminal_raw() -> None:
    from p.events import WORKER, Event
    from p.table import clip
    from p_protocol.wire import Op, check_reply

    view = {"id": uuid.uuid4().hex, "state": "lost", "started_at": None, "ended_at": None, "exit_code": None,
            "attachable": False}
    for field in ("reason", "engine_id", "node_list"):
        with pytest.raises(ProtocolError, match="must be a job"):
            check_reply(Op.WAIT, {"job": {**view, field: "disk full\x1b]52;c;cHduZWQ=\x07"}})
        check_reply(Op.WAIT, {"job": {**view, field: "disk full"}})
    with pytest.raises(ValueError, match="event"):
        Event.parse({"t": 1.0, "event": "ended\x1b]0;PWNED\x07", "id": view["id"]}, WORKER, "w1")
    assert clip("make \x1b[31mred\x07", 40) == "make \\x1b[31mred\\x07"
