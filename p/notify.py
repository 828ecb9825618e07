"""Notifications when a job ends (`notify:` in the config, `--notify`).

Here (the client): when the store records a job's end (p/store.py, once
per job however many `p` commands learn it), `notify.command` runs under
`sh -c` with the job's `p show --json` on stdin (its events: this
client's) and ``P_JOB_ID``, ``P_EXIT``, ``P_STATUS``, ``P_WORKER`` in its
environment, and `notify.desktop` shows a desktop notification through
`notify-send` where there is one. They run in a process of their own
(`python -m p.notify`), so a slow hook never holds `p` up; a hook that
fails or times out is logged as a `notify-failed` event in the client's
event log (`p events`), and `p`'s exit status is the job's as ever.

`--notify` (the run form) starts a watcher of the same kind that waits for
the job's end, so these fire for a detached job too; without a configured
`command` or `desktop`, it shows a desktop notification.

On the worker, `notify.worker_command` travels with each start request and
is run by the job's own script (agent/p_agent/scripts.py), not the agent:
the script is there when the job ends, even with no agent and no client.
"""

from __future__ import annotations

import json
import os
import sys
import time

from . import config as config_module
from . import events
from .errors import PError

# subprocess is imported where a process starts: every job's end comes
# here (Store.save), and most configs notify nobody (~3 ms of `p -- cmd`).
TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from .store import JobRecord

HOOK_TIMEOUT = 60.0


def job_ended(records: list[JobRecord]) -> None:
    """Tell of the ends of ``records`` as the config says, in the
    background. Never raises: the job matters more than its notification."""
    try:
        notify = config_module.load().notify
    except PError:
        return
    if not (notify.command or notify.desktop):
        return
    from . import output

    now = time.time()
    shown = [{**output.job_json(record, now), "events": _client_events(record.id)} for record in records]
    _spawn(["hooks"], json.dumps(shown))


def watch(job_id: str) -> None:
    """Start a watcher for ``job_id`` (`--notify`) that outlives this `p`."""
    _spawn(["watch", job_id], "")


def _spawn(args: list[str], stdin_text: str) -> None:
    import subprocess

    try:
        helper = subprocess.Popen([sys.executable, "-m", "p.notify", *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                  text=True)
        assert helper.stdin is not None
        helper.stdin.write(stdin_text)  # small: the pipe holds it all
        helper.stdin.close()
    except OSError as exc:
        print(f"p: cannot start the notification helper: {exc.strerror}", file=sys.stderr)


def _client_events(job_id: str) -> list[dict[str, object]]:
    return [event.to_json() for event in events.client_events(job_id)]


def _run_hooks(shown: list[dict[str, object]]) -> None:
    notify = config_module.load().notify
    for job in shown:
        if notify.command:
            _run_command(notify.command, job)
        if notify.desktop:
            _desktop(job)


def _run_command(command: str, job: dict[str, object]) -> None:
    import subprocess

    exit_code = job.get("exit_code")
    env = {**os.environ, "P_JOB_ID": str(job["id"]), "P_EXIT": "" if exit_code is None else str(exit_code),
           "P_STATUS": str(job["status"]), "P_WORKER": str(job["worker"])}
    try:
        result = subprocess.run(["sh", "-c", command], input=json.dumps(job, indent=1), text=True, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=HOOK_TIMEOUT)
        problem = None if result.returncode == 0 else result.returncode
    except subprocess.TimeoutExpired:
        problem = -1
    if problem is not None:
        events.append("notify-failed", str(job["id"]), str(job["worker"]), str(job["status"]), problem)


def _desktop(job: dict[str, object]) -> None:
    """A desktop notification where `notify-send` exists; silently none elsewhere."""
    import shutil  # only here, in the helper: it costs every job's end ~2 ms to import
    import subprocess

    if shutil.which("notify-send") is None:
        return
    exit_code = job.get("exit_code")
    title = f"p: job {str(job['id'])[:8]} {job['status']}" + ("" if exit_code is None else f" [exit {exit_code}]")
    try:
        subprocess.run(["notify-send", "--app-name=p", title, f"{job['command']} on {job['worker']}"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=HOOK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _watch(job_id: str) -> None:
    """Wait for the job's end and store it (which runs the hooks); across a
    broken link, for as long as the config's `reconnect_for`."""
    from p_protocol.wire import Op

    from . import link as link_module
    from .reconcile import apply
    from .store import Store

    store = Store()
    record = store.get(job_id)
    deadline = time.monotonic() + config_module.load().reconnect_for
    while not record.finished:
        try:
            link = link_module.connect(record.worker)
            try:
                view = link.agent.request(Op.WAIT, id=job_id, blocking=True)["job"]
            finally:
                link.close()
        except PError:
            if time.monotonic() > deadline:
                return
            time.sleep(5)
            continue
        record = apply(store.get(job_id), view)
        store.save(record)
    if not (config_module.load().notify.command or config_module.load().notify.desktop):
        _desktop({**record.to_dict(), "id": record.id})


if __name__ == "__main__":
    if sys.argv[1:2] == ["hooks"]:
        _run_hooks(json.loads(sys.stdin.read()))
    elif sys.argv[1:2] == ["watch"]:
        _watch(sys.argv[2])
