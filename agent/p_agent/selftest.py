"""`p-agent selftest`: one job through the real server, tmux and run.sh.

Used on every frozen binary (also under qemu-user) to show that the build
works: a socket request starts a job, its output is captured and its exit
status recorded.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import uuid

from p_protocol.layout import Layout
from p_protocol.wire import Op, decode, encode, request

from .jobs import Jobs
from .server import Agent, AgentServer
from .tmux import TmuxExecutor

EXPECTED_OUTPUT = b"selftest-42"
EXPECTED_EXIT = 3


def _request(path: str, message: dict[str, object]) -> tuple[dict[str, object], bytes]:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(path)
        conn.sendall(encode(message))
        reader = conn.makefile("rb")
        reply = decode(reader.readline())
        return reply, reader.read() if message["op"] == Op.LOGS.value else b""


def selftest() -> int:
    root = tempfile.mkdtemp(prefix="p-selftest-")
    layout = Layout(root)
    tmux = TmuxExecutor(layout)
    jobs = Jobs(layout, tmux)
    try:
        jobs.ensure_layout()
        server = AgentServer(layout.agent_socket(), Agent(layout, jobs))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        path = layout.agent_socket()
        job_id = uuid.uuid4().hex
        spec = {"command": "echo selftest-$((6*7)); exit 3"}
        reply, _ = _request(path, request(Op.START, id=job_id, spec=spec, cwd="/", worker="selftest", cols=80,
                                          rows=24, tty=False, attach=False))
        if not reply.get("ok"):
            print(f"selftest failed: start: {reply.get('error')}")
            return 1
        reply, _ = _request(path, request(Op.WAIT, id=job_id))
        job = reply.get("job") or {}
        _, output = _request(path, request(Op.LOGS, id=job_id, offset=0, follow=False))
        server.shutdown()
        if EXPECTED_OUTPUT not in output or job.get("exit_code") != EXPECTED_EXIT:  # type: ignore[union-attr]
            print(f"selftest failed: job={job} output={output!r}")
            return 1
        print("selftest ok")
        return 0
    finally:
        tmux.kill_server()
        shutil.rmtree(root, ignore_errors=True)
