"""What passes between the client `p` and the worker's `p-agent`, defined once.

Both programs import this package, so it stays stdlib-only (the agent is
frozen into static binaries) and light to import. A reader learns the whole
protocol from its modules:

* ``wire``: the messages, one JSON object per line over a unix socket; every
  request (``Op``) declares its fields and its reply's, and ``check_request``
  / ``check_reply`` hold messages to those declarations on both sides;
* ``layout``: the worker-side state under ``~/.p/`` (``Layout``) and the files
  of a job directory, the truth every engine writes;
* ``states``: the job states both sides agree on (``State``);
* ``jobspec``: a job's specification (``JobSpec``: command, env, secrets,
  limits, resources), what the run form asks and every side keeps;
* here: the version and the names both sides check (job ids, worker names).

Not the protocol, but shared and stdlib-only for the same reason:
``platforms`` (the arches p ships agents for) and ``sources`` (the digest
naming the agent's sources), which the build runs from a snapshot.

``PROTOCOL`` changes whenever a request or reply changes shape; ``VERSION`` is
the release, and a client replaces any agent whose version differs. An edit
anywhere in this package or in the agent makes built agents stale
(docs/architecture.md says what to do then).
"""

from __future__ import annotations

import re

VERSION = "0.1.0"
PROTOCOL = 17

# A job id is a lowercase hex UUID4 without dashes; anything else from the
# command line or from a worker is refused before it can reach a path or shell.
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SHORT_ID_LEN = 8
# Worker names become file names and status-bar text: keep them tame.
WORKER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Names the spare workdir of one client directory (a hash the client makes).
SPARE_KEY_RE = re.compile(r"^[0-9a-f]{16}$")
# What may run a worker's jobs (agent/p_agent/executor.py); a worker's config
# names one, the first by default, and the agent is started with it.
ENGINES = ("tmux", "slurm")
# What a worker must have on its PATH, whatever its engine: tmux, which holds
# the jobs, and rsync, which receives the syncs.
WORKER_TOOLS = ("tmux", "rsync")
# Seconds between SIGTERM and SIGKILL: what `p stop` waits by default, and
# what a job past its --timeout gets.
STOP_GRACE = 10.0


class ProtocolError(Exception):
    """A message that does not follow this package; the peer gets its text."""


def checked_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise ProtocolError(f"malformed job id {job_id!r}")
    return job_id
