"""The worker's queue: slots, GPUs, drain and approval, one FIFO per worker.

Every job the agent accepts enters here. It starts at once when the worker
has a free slot and the GPUs it asks for and nobody waits ahead of it;
otherwise it waits (``queued``) in submission order, and the agent starts it
the moment room frees, with no client connected. A job waits behind the one
ahead of it even if it would fit (no back-filling): a job asking for many
GPUs is never passed over for ever. Jobs held for approval
(``pending-approval``) keep their place but hold up nobody.

The queue, the jobs holding slots (with their GPUs) and the worker's
settings (``slots``, ``gpus``, ``drained``, ``approval``) are one file,
``~/.p/queue.json``, written atomically on every change: an agent that was
killed picks it all up when it starts again. The file is the truth, not the
agent's memory: agents of two versions may serve one worker side by side
(each its own clients), so every change is made under a lock on the file
(``queue.json.lock``) to what the file holds then. A job that ends while no agent
runs starts one (run.sh runs the launcher the client left, see
scripts.RUN_SH), so the queue moves on.

Slurm keeps a queue of its own and schedules many nodes and their GPUs: for
an engine like that the queue counts no GPUs (``keeps_gpus``), and with
``slots`` unset it only passes jobs through.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from p_protocol import JOB_ID_RE
from p_protocol.layout import Layout
from p_protocol.states import State
from p_protocol.wire import KINDS

from .files import read_file, write_file

TYPE_CHECKING = False  # typing costs startup time; only type checkers import it
if TYPE_CHECKING:
    from typing import Any

# While jobs wait, how often the agent looks for ended jobs (a stat per
# running job): the delay from a slot freeing to the next job starting.
POLL = 0.1
# Of those looks, one in this many also asks the engine which jobs it still
# holds (a process): a job that vanished unrecorded frees its slot too.
ASK_ENGINE_EVERY = 10


class Entry:
    """A waiting job: how many GPUs it needs, and whether it awaits approval."""

    __slots__ = ("job_id", "gpus", "held")

    def __init__(self, job_id: str, gpus: int, held: bool) -> None:
        self.job_id, self.gpus, self.held = job_id, gpus, held

    def to_json(self) -> dict[str, Any]:
        return {"id": self.job_id, "gpus": self.gpus, "held": self.held}


class Settings:
    """What `p worker register/set/drain` asked; ``gpus`` None: detected."""

    __slots__ = ("slots", "gpus", "drained", "approval")

    def __init__(self, slots: int | None = None, gpus: list[int] | None = None, drained: bool = False,
                 approval: bool = False) -> None:
        self.slots, self.gpus, self.drained, self.approval = slots, gpus, drained, approval

    def to_json(self) -> dict[str, Any]:
        return {"slots": self.slots, "gpus": self.gpus, "drained": self.drained, "approval": self.approval}


def is_gpu_list(value: object) -> bool:
    return KINDS["indices"][1](value)


def detect_gpus() -> list[int]:
    """The GPUs `nvidia-smi -L` lists (``GPU 0: ...``); none without it."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in listed.stdout.splitlines():
        head, colon, _ = line.partition(":")
        words = head.split()
        if colon and len(words) == 2 and words[0] == "GPU" and words[1].isdigit():
            found.append(int(words[1]))
    return found if listed.returncode == 0 and is_gpu_list(found) else []


class QueueRefused(Exception):
    """A job the worker will not take now (drained, more GPUs than it has)."""


class Queue:
    """``launch(job_id, gpus)`` starts a job (raising if it cannot);
    ``ended(job_ids, ask_engine)`` says which of those have ended (or
    vanished), asking the engine only when told to."""

    def __init__(self, layout: Layout, launch: Callable[[str, list[int]], None],
                 ended: Callable[[list[str], bool], set[str]],
                 failed: Callable[[str, str], None], *, keeps_gpus: bool = True) -> None:
        self.path = layout.queue_file
        self.keeps_gpus = keeps_gpus  # False: the engine gives jobs their GPUs
        self.launch = launch
        self.ended = ended
        self.failed = failed
        self.cond = threading.Condition()
        self.settings = Settings()
        # Replaced, never changed in place: readers (job views) need no lock.
        self.waiting: tuple[Entry, ...] = ()
        self.running: dict[str, list[int]] = {}  # job id -> its GPUs
        self.detected: list[int] | None = None
        self._load()

    # -- the file ------------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """This thread alone, and this agent alone, changes the queue now,
        starting from what the file holds (another agent may have changed it)."""
        with self.cond:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._load()  # a few hundred bytes: cheaper than telling whether it changed
                yield
            finally:
                os.close(fd)  # and the lock with it

    def _load(self) -> None:
        """What the last agent left; a damaged file is said in the log and
        each part of it that still makes sense is kept."""
        text = read_file(self.path)
        if text is None:
            return
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            print(f"{self.path}: {exc}; starting with an empty queue", file=sys.stderr)
            return
        settings = data.get("settings")
        if isinstance(settings, dict):
            slots, gpus = settings.get("slots"), settings.get("gpus")
            self.settings = Settings(
                slots if isinstance(slots, int) and not isinstance(slots, bool) and slots >= 1 else None,
                gpus if is_gpu_list(gpus) else None,
                settings.get("drained") is True, settings.get("approval") is True)
        waiting = []
        for entry in data.get("waiting") or []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) and JOB_ID_RE.match(entry["id"]) \
                    and isinstance(entry.get("gpus"), int) and entry["gpus"] >= 0:
                waiting.append(Entry(entry["id"], entry["gpus"], entry.get("held") is True))
        self.waiting = tuple(waiting)
        running = data.get("running")
        if isinstance(running, dict):
            self.running = {job_id: gpus for job_id, gpus in running.items()
                            if JOB_ID_RE.match(job_id) and is_gpu_list(gpus)}

    def _save(self) -> None:
        # These separators are part of the file's contract: a job's run.sh
        # greps for `"waiting": [{` to tell whether jobs wait (scripts.py).
        write_file(self.path, json.dumps({
            "settings": self.settings.to_json(), "waiting": [entry.to_json() for entry in self.waiting],
            "running": self.running}, separators=(", ", ": ")))

    # -- what the agent asks -------------------------------------------------

    def gpus(self) -> list[int]:
        if self.settings.gpus is not None:
            return list(self.settings.gpus)
        if self.detected is None:
            self.detected = detect_gpus()
        return list(self.detected)

    def submit(self, job_id: str, gpus: int, worker: str) -> None:
        """Take the job into the queue (the caller then calls ``schedule``);
        QueueRefused when the worker is drained or lacks that many GPUs."""
        with self._changing():
            if self.settings.drained:
                raise QueueRefused(f"worker {worker} is drained and takes no new jobs (queued ones wait, "
                                   f"running ones finish); `p worker resume {worker}` lets it take them again")
            have = len(self.gpus())
            if self.keeps_gpus and gpus > have:
                raise QueueRefused(f"the job asks for {gpus} GPU(s) and worker {worker} has {have}; "
                                   f"declare them with `p worker set {worker} --gpus 0,1,...`")
            self.waiting = (*self.waiting, Entry(job_id, gpus if self.keeps_gpus else 0, self.settings.approval))
            self._save()
            self.cond.notify_all()  # the scheduling thread looks for room from now on

    def state(self, job_id: str) -> tuple[State, int] | None:
        """(queued or pending-approval, position from 1) of a waiting job."""
        for position, entry in enumerate(self.waiting, 1):
            if entry.job_id == job_id:
                return (State.PENDING_APPROVAL if entry.held else State.QUEUED), position
        return None

    def gpus_of(self, job_id: str) -> list[int] | None:
        return self.running.get(job_id)

    def withdraw(self, job_id: str) -> bool:
        """Take a waiting job out (stopped, removed, rejected): True if it waited."""
        with self._changing():
            kept = tuple(entry for entry in self.waiting if entry.job_id != job_id)
            if len(kept) == len(self.waiting):
                return False
            self.waiting = kept
            self._save()
            self.cond.notify_all()
            return True

    def approve(self, job_id: str) -> bool:
        """Let a job held for approval start in its turn: True if it was held."""
        with self._changing():
            found = [entry for entry in self.waiting if entry.job_id == job_id and entry.held]
            if not found:
                return False
            self.waiting = tuple(Entry(e.job_id, e.gpus, False) if e.job_id == job_id else e
                                 for e in self.waiting)
            self._save()
            self.cond.notify_all()
        self.schedule()
        return True

    def configure(self, slots: int | None, gpus: list[int] | str | None, drained: bool | None,
                  approval: bool | None) -> None:
        """Change what is given: ``slots`` 0 means no cap, ``gpus`` "auto"
        means detect them."""
        with self._changing():
            if slots is not None:
                self.settings.slots = slots or None
            if gpus == "auto":
                self.settings.gpus, self.detected = None, None
            elif isinstance(gpus, list):
                self.settings.gpus = list(gpus)
            if drained is not None:
                self.settings.drained = drained
            if approval is not None:
                self.settings.approval = approval
            self._save()
            self.cond.notify_all()
        self.schedule()

    def summary(self) -> dict[str, Any]:
        """The worker's side of p_protocol.wire.WORKER, bar its load."""
        with self._changing():
            self._release(ask_engine=False)
            gpus = self.gpus()
            busy = {gpu for held in self.running.values() for gpu in held}
            return {"slots": self.settings.slots, "running": len(self.running), "queued": len(self.waiting),
                    "pending": [entry.job_id for entry in self.waiting if entry.held], "gpus": gpus,
                    "gpus_free": [gpu for gpu in gpus if gpu not in busy],
                    "gpus_detected": self.settings.gpus is None, "drained": self.settings.drained,
                    "approval": self.settings.approval}

    def busy(self) -> bool:
        """Jobs wait: the agent must stay up to start them."""
        return bool(self.waiting)

    # -- starting jobs -------------------------------------------------------

    def schedule(self, ask_engine: bool = False) -> None:
        """Start, in order, every waiting job there is room for now."""
        with self._changing():
            self._release(ask_engine)
            while not self.settings.drained:
                entry = self._next()
                if entry is None or not self._fits(entry):
                    break
                free = [gpu for gpu in self.gpus() if gpu not in {g for gs in self.running.values() for g in gs}]
                chosen = free[:entry.gpus]
                try:
                    self.launch(entry.job_id, chosen)
                except Exception as exc:  # noqa: BLE001 - one job that cannot start stops no other
                    self.failed(entry.job_id, str(exc) or type(exc).__name__)
                else:
                    self.running[entry.job_id] = chosen
                self.waiting = tuple(e for e in self.waiting if e.job_id != entry.job_id)
                self._save()

    def _next(self) -> Entry | None:
        return next((entry for entry in self.waiting if not entry.held), None)

    def _fits(self, entry: Entry) -> bool:
        slots = self.settings.slots
        if slots is not None and len(self.running) >= slots:
            return False
        busy = {gpu for held in self.running.values() for gpu in held}
        return len([gpu for gpu in self.gpus() if gpu not in busy]) >= entry.gpus

    def _release(self, ask_engine: bool) -> None:
        """Free the slots (and GPUs) of jobs that have ended."""
        if not self.running:
            return
        gone = self.ended(list(self.running), ask_engine)
        if gone:
            for job_id in gone:
                self.running.pop(job_id, None)
            self._save()

    def run(self) -> None:
        """The agent's scheduling thread: while jobs wait, look for room."""
        polls = 0
        self.schedule(ask_engine=True)  # what changed while no agent ran
        while True:
            with self.cond:
                startable = not self.settings.drained and self._next() is not None
                self.cond.wait(POLL if startable else None)
            polls += 1
            self.schedule(ask_engine=polls % ASK_ENGINE_EVERY == 0)

    def start_thread(self) -> None:
        threading.Thread(target=self.run, name="queue", daemon=True).start()
