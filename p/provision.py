"""Putting the right p-agent on a worker and starting it, in as few SSH
round trips as possible: one probe, then an upload only when the worker lacks
this exact build (same version and sha256), then one start."""

from __future__ import annotations

import json
import os
import subprocess
from shlex import quote

from p_protocol import ENGINES, VERSION, WORKER_TOOLS
from p_protocol.layout import Layout

from . import artifacts, paths
from .artifacts import Artifact
from .errors import LINK_LOST, PError
from .output import say
from .ssh import Transport

# Facts about the worker, one `key=value` a line: all `worker ls --check`
# needs, in as few processes as possible (it probes many workers at once).
FACTS_SH = """\
echo "os=$(uname -s)"
echo "machine=$(uname -m)"
echo "home=$HOME"
for tool in tmux rsync python3 {slurm_tools}; do
    if command -v "$tool" >/dev/null 2>&1; then echo "has_$tool=1"; else echo "has_$tool=0"; fi
done
"""

# What a Slurm login node needs besides (agent/p_agent/slurm.py).
SLURM_TOOLS = ("sbatch", "squeue", "scancel", "scontrol")
FACTS_SH = FACTS_SH.replace("{slurm_tools}", " ".join(SLURM_TOOLS))

# A pid file is never trusted by itself: after a reboot or an OOM kill its pid
# may name any process, a job's included. An agent holds its pid file open,
# flock'ed, for as long as it serves (agent/p_agent/daemon.py): `holder`
# prints the file's pid only if that process has the file open; `served`
# says whether any process holds the lock (flock(1), or the same check
# where it is missing).
AGENT_SH = """\
holder() {{
    pid=
    read -r pid 2>/dev/null < "$1"
    case $pid in ''|*[!0-9]*) return 1 ;; esac
    [ -d /proc/"$pid" ] || return 1
    file=$(cd "${{1%/*}}" 2>/dev/null && pwd -P)/${{1##*/}}
    for fd in /proc/"$pid"/fd/*; do
        [ "$(readlink "$fd" 2>/dev/null)" = "$file" ] && echo "$pid" && return 0
    done
    return 1
}}
served() {{
    if command -v flock >/dev/null 2>&1; then ! flock -n "$1" true 2>/dev/null; else holder "$1" >/dev/null; fi
}}
"""

# Then the installed agents. Creating ~/.p here too saves a round trip later.
PROBE_SH = FACTS_SH + AGENT_SH + """\
umask 077
mkdir -p "{bin}" "{run}" "{tmp}" "{jobs}" "{workdirs}" || exit 1
chmod 700 "{root}" "{run}"
cd "{bin}" || exit 1
# Uploads cut short (a client gone mid-transfer) are never finished later.
find . -maxdepth 1 -name '.upload-*' -mmin +10 -exec rm -f {{}} + 2>/dev/null
for name in {names}; do
    [ -f "$name" ] || continue
    sum=$( (sha256sum "$name" || shasum -a 256 "$name") 2>/dev/null | cut -d' ' -f1)
    [ -n "$sum" ] || sum=$(head -n 1 "$name.sha256" 2>/dev/null)
    echo "sha:$name=$sum"
done
if holder "{pidfile}" >/dev/null && [ -S "{socket}" ]; then
    echo running=1
fi
"""

# Installs an uploaded agent (verify, then rename: never a half-written
# binary under the real name), removes stale pid files, starts ours. Agents
# of other versions serve their own clients and jobs and leave by themselves
# once idle; only ours is restarted (a new build of it, or it did not
# answer), and only once it is known to be the agent.
# A static agent starts from its unpacked copy in ~/.p/lib/ when one is
# complete (see agent/p_agent/unpack.py); the first start from the binary
# makes that copy, and a copy that fails to start is made again.
START_SH = AGENT_SH + """\
cd "{bin}" || exit 1
upload={upload}
name={name}
lib={lib}
# The seal: the build's sha256, then the file's inode, size and mtime, so
# that a binary changed in place since is noticed without hashing it.
seal() {{ echo {sha}; stat -c '%i %s %y' "$name" 2>/dev/null; }}
# Started from facts the client remembered (no probe): the build it names
# must be the one installed, untouched since it was sealed, else the
# client probes after all.
if [ -n {remembered} ]; then
    sealed=
    {{ {{ IFS= read -r sum && IFS= read -r file && sealed="$sum
$file"; }} < "$name.sha256"; }} 2>/dev/null
    [ "$sealed" = "$(seal)" ] || {{ echo "{stale}" >&2; exit 1; }}
elif [ -z "$upload" ]; then
    (umask 077; seal > "$name.sha256")  # the probe found this build installed
fi
if [ -n "$upload" ]; then
    sum=$( (sha256sum "$upload" || shasum -a 256 "$upload") 2>/dev/null | cut -d' ' -f1)
    if [ -n "$sum" ] && [ "$sum" != {sha} ]; then
        rm -f "$upload"; echo "the upload arrived damaged (sha256 $sum); retry" >&2; exit 1
    fi
    chmod 700 "$upload" && mv -f "$upload" "$name" && (umask 077; seal > "$name.sha256") || exit 1
fi
for pidfile in "{run}"/agent-*.pid; do
    [ -f "$pidfile" ] || continue
    # Ours is rewritten by the agent that starts below.
    served "$pidfile" || {{ [ "$pidfile" = "{pidfile}" ] || rm -f "$pidfile"; continue; }}
    [ "$pidfile" = "{pidfile}" ] && {{ [ -n "$upload" ] || [ -n {restart} ]; }} || continue
    pid=$(holder "$pidfile") || continue
    kill "$pid" 2>/dev/null || continue
    n=0
    while kill -0 "$pid" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
done
in_use=
for pidfile in "{run}"/agent-*.pid; do
    pid=$(holder "$pidfile") && in_use="$in_use $(readlink /proc/"$pid"/exe 2>/dev/null)"
done
for dir in "{lib_dir}"/*; do
    [ -e "$dir" ] && [ "$dir" != "$lib" ] || continue
    case $in_use in *" $(cd "$dir" && pwd -P)/"*) continue ;; esac  # an agent of another version runs it
    rm -rf "$dir"
done
start="{start_file}"
# On a remembered start, written only when it changed (its first line names
# its content); a start after a probe writes it whatever it holds.
head=
[ -z {remembered} ] || IFS= read -r head 2>/dev/null < "$start"
if [ "$head" != {launch_head} ]; then
    (umask 077; cat > "$start.tmp") <<'P_START_AGENT' && mv -f "$start.tmp" "$start" || exit 1
{launch}
P_START_AGENT
fi
exec sh "$start"
"""

# How this build of the agent starts, kept as a file on the worker
# (Layout.agent_launcher) so that a job ending while no agent runs can start
# one there, which starts the jobs waiting in the worker's queue.
LAUNCH_SH = """\
cd "{bin}" || exit 1
unset TMUX TMUX_PANE
export P_USER_TMPDIR="${{TMPDIR-}}" TMPDIR="{tmp}"
name={name}
lib={lib}
if [ -n "$lib" ]; then
    complete=
    read -r complete 2>/dev/null < "$lib/.complete"
    if [ "$complete" = {sha} ]; then
        "$lib/p-agent" serve --detach --engine {engine} && exit 0
        rm -rf "$lib"  # it would not start: the binary makes it again
    fi
    exec "{bin}/$name" serve --detach --engine {engine} --unpack-to "$lib" --sha256 {sha}
fi
exec {launcher} "{bin}/$name" serve --detach --engine {engine}"""


def _paths() -> dict[str, str]:
    """The worker's layout (p_protocol.layout), for the snippets above: each
    path is used inside double quotes there, where $HOME expands."""
    remote = Layout("$HOME/.p")
    return {"root": remote.root, "bin": remote.bin_dir, "run": remote.run_dir, "tmp": remote.tmp_dir,
            "jobs": remote.jobs_dir, "workdirs": remote.workdirs_dir, "lib_dir": remote.lib_dir,
            "pidfile": remote.agent_pidfile(), "socket": remote.agent_socket(),
            "start_file": remote.agent_launcher()}


# A plain class, not a dataclass: importing dataclasses costs a cold start
# ~10 ms (see p/config.py).
class WorkerFacts:
    def __init__(self, *, system: str, machine: str, home: str, has_tmux: bool, has_rsync: bool,
                 has_python3: bool, installed: dict[str, str], running: bool,
                 missing_slurm: tuple[str, ...] = ()) -> None:
        self.system = system
        self.machine = machine
        self.home = home
        self.has_tmux = has_tmux
        self.has_rsync = has_rsync
        self.has_python3 = has_python3
        self.installed = installed  # remote agent file name -> sha256
        self.running = running
        self.missing_slurm = missing_slurm  # of SLURM_TOOLS


def probe(transport: Transport) -> WorkerFacts:
    """The worker's facts, its installed agents among them."""
    names = " ".join(quote(f"p-agent-{VERSION}{suffix}") for suffix in ("", ".pyz"))
    output = transport.run_script(PROBE_SH.format(names=names, **_paths()), timeout=60.0)
    facts: dict[str, str] = {}
    installed: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("sha:"):
            installed[key[4:]] = value.strip()
        else:
            facts[key] = value.strip()
    if "home" not in facts:
        raise PError(f"worker {transport.worker.name} gave no usable answer to the probe; "
                     "is its login shell a POSIX one with `sh` on PATH?")
    return WorkerFacts(
        system=facts.get("os", "?"),
        machine=facts.get("machine", "?"),
        home=facts["home"],
        has_tmux=facts.get("has_tmux") == "1",
        has_rsync=facts.get("has_rsync") == "1",
        has_python3=facts.get("has_python3") == "1",
        installed=installed,
        running=facts.get("running") == "1",
        missing_slurm=tuple(tool for tool in SLURM_TOOLS if facts.get(f"has_{tool}") != "1"),
    )


def check_tools(transport: Transport, facts: WorkerFacts) -> None:
    present = {"tmux": facts.has_tmux, "rsync": facts.has_rsync}
    missing = [tool for tool in WORKER_TOOLS if not present[tool]]
    if missing:
        raise lacking(transport.worker.name, missing)


def lacking(worker_name: str, missing: list[str]) -> PError:
    """A worker without the tools of WORKER_TOOLS named in ``missing``."""
    return PError(f"worker {worker_name} lacks {' and '.join(missing)}; "
                  f"install {' and '.join(missing)} there (e.g. `apt install {' '.join(missing)}`)")


def ensure_agent(transport: Transport, facts: WorkerFacts, *, restart: bool = False,
                 remembered: bool = False, forward: tuple[str, str] | None = None) -> Artifact:
    """Install (if needed) and start this build of the agent on the worker.
    ``remembered``: the facts are an earlier probe's (``remembered_facts``);
    StaleFacts if the worker no longer has that build installed.
    ``forward``: (local, the agent's socket), set up once it runs."""
    check_tools(transport, facts)
    artifact = artifacts.choose(transport.worker.name, facts.machine, facts.system, facts.has_python3)
    up_to_date = facts.installed.get(artifact.remote_name) == artifact.sha256
    if up_to_date and facts.running and not restart:
        if forward is not None:
            transport.forward(*forward)
        return artifact
    upload = "" if up_to_date else _upload(transport, artifact)
    launcher = "python3" if artifact.kind == "zipapp" else ""
    # Named by the binary's sha256 (hex, so safe unquoted inside the quotes).
    where = _paths()
    lib = f'"{where["lib_dir"]}/{artifact.sha256[:16]}"' if artifact.kind == "binary" else '""'
    engine = quote(transport.worker.engine or ENGINES[0])
    launch = LAUNCH_SH.format(name=quote(artifact.remote_name), lib=lib, engine=engine,
                              sha=quote(artifact.sha256), launcher=launcher, **where)
    head = f"# p-agent launcher {paths.name_digest(launch)}"
    script = START_SH.format(upload=quote(upload), name=quote(artifact.remote_name), lib=lib,
                             sha=quote(artifact.sha256), restart=quote("1" if restart else ""),
                             remembered=quote("1" if remembered else ""), stale=STALE,
                             launch=f"{head}\n{launch}", launch_head=quote(head), **where)
    try:
        transport.run_script(script, timeout=120.0, forward=forward)
    except PError as exc:
        # Not a link that could not be made: the probe would only wait on it again.
        if remembered and exc.exit_code != LINK_LOST:
            raise StaleFacts(exc.message) from None
        raise
    return artifact


# What the start script says when remembered facts no longer hold.
STALE = "p: remembered facts are stale"


class StaleFacts(PError):
    """The worker is not as an earlier probe found it (or did not answer):
    probe it again."""


def remembered_facts(transport: Transport) -> WorkerFacts | None:
    """What the last probe of this worker found, for a cold start that then
    needs no probe of its own (one round trip fewer). A cache: anything
    wrong with it costs only that probe."""
    try:
        with open(_facts_file(transport)) as src:
            data = json.load(src)
        installed = data["installed"]
        strings = (data["system"], data["machine"], data["home"])
        flags = (data["has_tmux"], data["has_rsync"], data["has_python3"])
        if not (all(isinstance(value, str) for value in strings) and all(isinstance(f, bool) for f in flags)
                and isinstance(installed, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in installed.items())
                and data["home"].startswith("/") and data["has_tmux"] and data["has_rsync"]):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return WorkerFacts(system=data["system"], machine=data["machine"], home=data["home"], has_tmux=True,
                       has_rsync=True, has_python3=data["has_python3"], installed=dict(installed), running=False)


def remember_facts(transport: Transport, facts: WorkerFacts, artifact: Artifact) -> None:
    """After a start from a probe: what it found, with the build now installed."""
    from .fsutil import atomic_write

    atomic_write(_facts_file(transport), json.dumps({
        "system": facts.system, "machine": facts.machine, "home": facts.home, "has_tmux": facts.has_tmux,
        "has_rsync": facts.has_rsync, "has_python3": facts.has_python3,
        "installed": {**facts.installed, artifact.remote_name: artifact.sha256}}), durable=False)


def forget_facts(transport: Transport) -> None:
    try:
        os.unlink(_facts_file(transport))
    except FileNotFoundError:
        pass


def _facts_file(transport: Transport) -> str:
    return os.path.join(paths.cache_dir(), "workers", f"facts-{transport.key}.json")


def _upload(transport: Transport, artifact: Artifact) -> str:
    data = artifact.read()
    upload = f".upload-{os.urandom(6).hex()}"
    if artifact.kind == "zipapp":
        say(f"p: this install of p has no current p-agent binary for {artifact.arch} (`make agents` "
            f"builds them); {transport.worker.name} runs the agent from source with python3")
    # `cat > file` reads the same in every login shell, fish and csh included.
    # Relative to the login directory, the worker's home.
    process = subprocess.Popen(transport.ssh_argv(f"cat > {Layout('.p').bin_dir}/{upload}"),
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stdin is not None
    from .progress import Progress

    with Progress(f"uploading p-agent to {transport.worker.name}", len(data)) as progress:
        chunk = 256 * 1024
        try:
            for offset in range(0, len(data), chunk):
                process.stdin.write(data[offset:offset + chunk])
                progress.advance(min(chunk, len(data) - offset))
            process.stdin.close()
        except BrokenPipeError:
            pass
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.wait() != 0:
        raise transport.explain(stderr)
    return upload
