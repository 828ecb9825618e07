"""The per-job shell scripts: the only thing that runs for a job's whole life.

No Python process stays alive per job. tmux runs ``run.sh``, which records
everything the agent later reads (``pgid``, ``output.log``, ``ended_at``,
``exitcode``) as files, so jobs outlive the agent and survive its upgrade.
Everything here must work with a plain POSIX ``sh`` (dash, busybox).
"""

from __future__ import annotations

import re
from shlex import quote

from p_protocol import STOP_GRACE, checked_job_id
from p_protocol.layout import END_FILE_SIZE, JobFile, Layout

# Why each step:
# - A job started from a terminal gets the session's terminal: `set -m` gives
#   the command its own process group, which becomes the terminal's
#   foreground group, so Ctrl+C reaches the job, not this script, and
#   `p stop` can signal the whole group.
# - A job started off a terminal gets none, as `ssh host cmd` gives none: its
#   stdin is /dev/null (a prompt reads EOF), its output goes through a pipe
#   (so pagers, git and colouring tools see no terminal), it runs in a
#   session of its own (`setsid`: no controlling terminal to open as
#   /dev/tty) and without TERM. `cat` copies the pipe (a fifo, unlinked once
#   open) into the pane, so the output is captured and shown as for any job.
#   The tmux engine makes the fifo as it writes this script, and `rm` runs
#   beside the job: two processes fewer before it starts (an engine that
#   makes none, this script makes).
#   The end marker below goes through the same pipe, behind the job's last
#   byte; whatever a background process of the job writes later is not the
#   job's output, and does not hold up its end.
# - What the script writes is the user's alone (umask 077, as everything
#   under ~/.p); the command runs with the umask the script was given, so a
#   job's own files come out as they would over `ssh host cmd`.
# - The end files are written over space reserved when the job started
#   (`pending/<name>`, filled in place, then moved into the job's directory
#   by one `mv`, which moves them in order, `exitcode` last): a disk the job
#   filled cannot leave them empty, so its end and exit status are never
#   lost. Where that fails, each is recorded on its own, as it can be.
# - The job's variables (`-e`, `--secret`) come from files the agent wrote
#   (0600), sourced by the job's own shell just before the command: they are
#   in no argv, and no value is evaluated (each is single-quoted, see
#   p_protocol.jobspec). The job deletes the secrets file as soon as it has
#   read it; this script deletes it again when the job ends, in case the job
#   died first. Read before `cd` so a missing workdir does not keep it.
# - `trap : INT` keeps the script alive when dash re-raises the job's SIGINT,
#   so the exit code is still written.
# - The agent pipes the pane into output.log before this script runs. The
#   pipe stays open to the end (closing it would drop what tmux has not yet
#   written). After the job, an end marker (an OSC string, which tmux
#   swallows, so no screen shows it) travels the same way as the job's
#   output: once it is in output.log, all of the job's output is before it,
#   and that length goes to `log_end`, so readers leave out marker and banner.
#   It is sent first, and travels while the end time is read: looked for
#   then, it is there already (no wait, no `sleep` process).
# - `times` just before the job and just after it (the shell's builtin, so
#   no process of its own): the children's line grows by the CPU time of the
#   job's processes (see rusage.py). Not with a launcher (srun), whose
#   processes run elsewhere.
# - The job's end goes to the worker's event log (events.py) as one short
#   line of numbers and hex, appended in one write, before `exitcode`: no
#   client can act on the end (`p rm`) before it is logged.
# - `ended_at` is kept to the millisecond, the precision of `started_at`, so
#   the status bar and the client compute the same duration from the same
#   numbers; `exitcode` comes last: once it holds a number, the job has
#   finished.
# - Its slot frees when the job ends: jobs waiting in the worker's queue
#   (queue.py) start then. The agent looks for that, but if no agent runs
#   (killed, crashed), nobody would: the script starts one with the launcher
#   the client's start script left, and it picks the queue up. The agent
#   holds its pid file locked while it serves (`flock -n` tells), and writes
#   the queue with "waiting": [{ only when jobs wait. It gets the umask this
#   script was given, which its jobs then get, not this script's own.
# - The worker's notification command (the client's `notify.worker_command`,
#   a file the agent wrote) runs once the end is recorded, here and not in
#   the agent, so it fires with no agent and no client running. It runs in
#   the background, deaf to the hangup that closing the session sends, so a
#   slow webhook holds up nothing; a failure is logged as `notify-failed`.
# - The script's pid goes to a file at once: the job's session is open while
#   the script runs, so whoever asks need not ask tmux (a process a question).
# - The "Job done" screen is for someone who is looking. With no client
#   attached the script ends, and the session with it: nothing stays behind
#   per finished job. A client that was told to expect the job (an attached
#   run) is waited for, briefly, if the job ends before it arrives. The
#   screen ends at a key, or when the last client leaves.
RUN_SH = """\
# Generated by p-agent for job {job_id}.
job={job_dir}
sock={tmux_socket}
user_umask=$(umask)
umask 077
echo $$ > "$job/{script_pid}"
{record_fn}
{now_fn}
trap : INT
{watchdog}{times_before}{start}
{times_after}[ -z "$watchdog" ] || kill "$watchdog" 2>/dev/null
[ ! -f "$job/{timed_out}" ] || code=124
[ ! -e "$job/{secrets}" ] || rm -f "$job/{secrets}"
printf '{marker_printf}{marker_after}'{marker_to}
end=$(now)
n=0
until tail -c 256 "$job/{output}" | grep -q {marker_text}; do
    [ $n -lt 520 ] || break
    [ $n -lt 20 ] && sleep 0.001 || sleep 0.01; n=$((n + 1))
done
size=$(wc -c < "$job/{output}")
[ $n -lt 520 ] && size=$((size - {marker_len}))
filled=
fill {ended_at} "$end" && fill {log_end} "$size" && fill {exitcode} "$code" && filled=1
printf '{{"t":%s,"event":"ended","id":"{job_id}","exit_code":%d}}\n' "$end" "$code" >> {events_log}
[ -z "$filled" ] || mv -f "$job/{pending}/{ended_at}" "$job/{pending}/{log_end}" "$job/{pending}/{exitcode}" "$job/"
[ -s "$job/{exitcode}" ] || {{
    record {ended_at} "$end"
    record {log_end} "$size"
    record {exitcode} "$code"
}}
if [ -f "$job/{notify}" ]; then
    (
        trap '' HUP
        P_JOB_ID={job_id} P_EXIT=$code P_WORKER="$(cat "$job/{worker}")" sh "$job/{notify}" \
            </dev/null >>"$job/{notify_log}" 2>&1 ||
            printf '{{"t":%s,"event":"notify-failed","id":"{job_id}","exit_code":%d}}\n' "$(now)" $? >> {events_log}
    ) &
fi
{kick}pane() {{
    tmux -S "$sock" display-message -p -t "$TMUX_PANE" "$1" 2>/dev/null
}}
n=0
while [ -n "{expect_client}" ] && [ -z "$(pane '#{{session_last_attached}}')" ] && [ $n -lt {client_polls} ]; do
    sleep 0.1; n=$((n + 1))
done
attached() {{
    [ "$(pane '#{{session_attached}}')" -gt 0 ] 2>/dev/null
}}
attached || exit 0
printf '\\n\\033[1m--- Job done [exit %s]. Press any key to detach. ---\\033[0m' "$code"
# A read gives up after half a second, so a client that left is noticed.
stty raw -echo min 0 time 5 2>/dev/null
while attached; do
    [ "$(dd bs=1 count=1 2>/dev/null | wc -c)" -eq 0 ] || break
done
"""

# Starts the agent when jobs wait in the queue and none runs (see above).
KICK = """\
agent_up() {{
    [ -f "$1" ] || return 1
    if command -v flock >/dev/null 2>&1; then ! flock -n "$1" true 2>/dev/null
    else kill -0 "$(cat "$1")" 2>/dev/null; fi
}}
if grep -q '"waiting": \\[{{' {queue} 2>/dev/null && [ -f {agent_start} ] && ! agent_up {pidfile}; then
    (umask "$user_umask"; trap '' HUP; sh {agent_start} </dev/null >/dev/null 2>&1 &)
fi
"""

# `fill` writes end file $1 as $2 in its reserved space (needs $job), where
# it waits for one `mv` to move the filled ones into place; `record` writes
# one and moves it, or writes it as it can where nothing was reserved.
RECORD_FN = """\
fill() {{
    printf '%-{pad}s\\n' "$2" 1<>"$job/{pending}/$1"
}} 2>/dev/null
record() {{
    fill "$1" "$2" && mv -f "$job/{pending}/$1" "$job/$1" ||
        echo "$2" > "$job/$1" || : > "$job/{end_failed}"
}}"""

TTY_START = """\
set -m
sh -c 'echo $$ > "$1/{pgid}"; umask "$5"; {load_env}cd "$2" || exit 1; exec {launcher}"$3" -c "$4"' p-job \\
    "$job" {workdir} "${{SHELL:-/bin/sh}}" {command} "$user_umask"
code=$?"""

NO_TTY_START = """\
[ -p "$job/{fifo}" ] || mkfifo -m 600 "$job/{fifo}"
cat "$job/{fifo}" &
exec 3>"$job/{fifo}"
rm -f "$job/{fifo}" 3>&- &
detach=setsid
command -v setsid >/dev/null 2>&1 || {{ detach=; set -m; }}
$detach sh -c 'echo $$ > "$1/{pgid}"; umask "$5"; unset TERM TMUX TMUX_PANE
    {load_env}cd "$2" || exit 1; exec {launcher}"$3" -c "$4"' \\
    p-job "$job" {workdir} "${{SHELL:-/bin/sh}}" {command} "$user_umask" </dev/null >&3 2>&3 3>&-
code=$?"""

# The job's --timeout, kept by a subshell of run.sh (which outlives the
# agent): it sleeps until the deadline, marks the job timed out, logs it,
# and signals the job's process group as `p stop` does (SIGTERM, SIGKILL
# after the grace). run.sh ends it with the job (its sleep too: the trap), so
# nothing is left behind; a job that `p stop` reached first is left alone.
WATCHDOG = """\
watchdog=
(
    trap 'kill $napping 2>/dev/null; exit 0' TERM
    nap() {{ sleep "$1" & napping=$!; wait $napping; }}
    nap {timeout}
    [ ! -f "$job/{stopped}" ] || exit 0
    n=0
    while [ ! -s "$job/{pgid}" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    read -r pgid < "$job/{pgid}" && [ "$pgid" -gt 1 ] || exit 0
    # A job that ended by itself right at its deadline did not time out.
    kill -0 -"$pgid" 2>/dev/null || exit 0
    : > "$job/{timed_out}"
    printf '{{"t":%s,"event":"timeout","id":"{job_id}","after":%s}}\\n' "$(now)" {timeout} >> {events_log}
    kill -TERM -"$pgid" 2>/dev/null
    nap {grace}
    kill -KILL -"$pgid" 2>/dev/null
) </dev/null >/dev/null 2>&1 &
watchdog=$!
"""

# What feeds output.log (tmux pipes the pane's output to it): `cat`, or for
# a job with --max-output this awk program, which keeps the first `cap`
# bytes, counts the rest, and at the end marker (see RUN_SH) writes one
# line saying how much it dropped, then the marker; what follows the marker
# (the "Job done" screen) is drained. It reads the pane's output a line at
# a time (run.sh ends the marker with a newline for it), writes each line at
# once, and counts bytes (LC_ALL=C; mawk and gawk keep NUL bytes). mawk
# fills its whole input buffer before it looks at a record unless told
# `-W interactive` (which also makes its records lines, as here). It runs in
# tmux's pipe, not in the agent, so the cap holds with no agent and no
# client; the job never waits for it.
CAPTURE_AWK = """\
BEGIN { ORS = ""; prefix = sprintf("%c]7777;", 27); mark = "p-end-" id; kept = 0; dropped = 0; ended = 0 }
function keep(text, room) {
    room = cap - kept
    if (length(text) <= room) { printf "%s", text; kept += length(text); return }
    if (room > 0) printf "%s", substr(text, 1, room)
    kept = cap; dropped += length(text) - room
}
function say_dropped() {
    if (!dropped) return
    printf "\\r\\n[p: output capped by --max-output: kept the first %d bytes, dropped %d more]", cap, dropped
    printf "\\r\\n"
}
{
    at = index($0, mark)
    if (at > 7 && substr($0, at - 7, 7) == prefix) {
        keep(substr($0, 1, at - 8)); say_dropped(); printf "%s%s%c", prefix, mark, 7; fflush()
        ended = 1; exit
    }
    if (kept < cap) { keep($0 "\\n"); fflush() } else dropped += length($0) + 1
}
END { if (!ended) { say_dropped(); fflush() } }
"""


def capture_command(output: str, awk_file: str | None, job_id: str, max_output: int | None) -> str:
    """The shell command tmux pipes the job's pane to: `cat`, or with a cap
    CAPTURE_AWK from ``awk_file`` (see there)."""
    if max_output is None or awk_file is None:
        return "exec cat >> " + quote(output)
    return ("interactive=; awk -W version 2>/dev/null | grep -q mawk && interactive='-W interactive'; "
            f"LC_ALL=C awk $interactive -v cap={int(max_output)} -v id={checked_job_id(job_id)} "
            f"-f {quote(awk_file)} >> {quote(output)}; exec cat >/dev/null")


# How long an expected client may take to attach, in tenths of a second.
CLIENT_POLLS = 300

# Sourced inside the job's `sh -c` (positional $1: the job directory), so
# variables such as PATH or IFS change the job, not run.sh.
LOAD_ENV = ('[ ! -f "$1/{env}" ] || . "$1/{env}"; '
            'if [ -f "$1/{secrets}" ]; then . "$1/{secrets}"; rm -f "$1/{secrets}"; fi; ')

# Prints "[running] 0:02:14" for the status bar, once a second while attached.
# Durations in integer milliseconds, as the client computes them.
STATUS_SH = """\
job={job_dir}
ms() {{
    whole=${{1%%.*}}
    frac=${{1#"$whole"}}; frac=${{frac#.}}
    case $frac in *[!0-9]*) frac= ;; esac
    frac=${{frac}}000; frac=${{frac%"${{frac#???}}"}}; frac=${{frac#0}}; frac=${{frac#0}}
    echo $((whole * 1000 + frac))
}}
start=$(ms "$(cat "$job/{started_at}")")
code=
read -r code 2>/dev/null < "$job/{exitcode}"
if [ -n "$code" ]; then
    end=
    read -r end 2>/dev/null < "$job/{ended_at}"
    end=$(ms "${{end:-$(date +%s)}}")
    state="done [$code]"
else
    end=$(ms "$(date +%s.%N)")
    state=running
fi
s=$(((end - start) / 1000))
[ $s -ge 0 ] || s=0
printf '[%s] %d:%02d:%02d' "$state" $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
"""


# The pipe of a job started off a terminal (see RUN_SH), in its directory.
OUTPUT_FIFO = "output.fifo"


def end_marker(job_id: str) -> bytes:
    return f"\033]7777;p-end-{job_id}\007".encode()


_TAME_WORD = re.compile(r"^[A-Za-z0-9_=.,/+-]+$")


# The time to the millisecond where `date` has %N, else to the second.
NOW_FN = """\
now() {
    t=$(date +%s.%N)
    case $t in *.[0-9][0-9][0-9]*) t=${t%"${t#*.???}"} ;; *) t=${t%%.*} ;; esac
    echo "$t"
}"""


def record_fn() -> str:
    return RECORD_FN.format(pad=END_FILE_SIZE - 1, pending=JobFile.PENDING, end_failed=JobFile.END_FAILED)


def run_sh(job_id: str, job_dir: str, workdir: str, command: str, tmux_socket: str, events_log: str, *, tty: bool,
           expect_client: bool, launcher: list[str] | None = None, timeout: float | None = None,
           capped: bool = False, layout: Layout | None = None) -> str:
    """``launcher``: words that run the job's shell (Slurm's ``srun`` on
    several nodes); they land inside a single-quoted `sh -c`, so only tame
    words are taken. ``layout``: the agent's, whose queue the job's end may
    have to move on (see above); not on a node with no agent."""
    if not all(_TAME_WORD.match(word) for word in launcher or []):
        raise ValueError(f"launcher words must be plain: {launcher!r}")
    start = TTY_START if tty else NO_TTY_START
    watchdog = "watchdog=\n"
    if timeout is not None:
        watchdog = WATCHDOG.format(timeout=_seconds(timeout), grace=_seconds(STOP_GRACE), stopped=JobFile.STOPPED,
                                   pgid=JobFile.PGID, timed_out=JobFile.TIMED_OUT, job_id=job_id,
                                   events_log=quote(events_log))
    return RUN_SH.format(
        record_fn=record_fn(), now_fn=NOW_FN,
        watchdog=watchdog,
        timed_out=JobFile.TIMED_OUT,
        times_before="" if launcher else f'times > "$job/{JobFile.CPU_TIMES}"\n',
        times_after="" if launcher else f'times >> "$job/{JobFile.CPU_TIMES}"\n',
        kick=KICK.format(queue=quote(layout.queue_file), agent_start=quote(layout.agent_launcher()),
                         pidfile=quote(layout.agent_pidfile())) if layout is not None else "",
        start=start.format(pgid=JobFile.PGID, fifo=OUTPUT_FIFO, command=quote(command), workdir=quote(workdir),
                           load_env=LOAD_ENV.format(env=JobFile.ENV, secrets=JobFile.SECRETS),
                           launcher="".join(word + " " for word in launcher or [])),
        secrets=JobFile.SECRETS,
        script_pid=JobFile.SCRIPT_PID,
        marker_to="" if tty else " >&3; exec 3>&-",
        # A capped capture reads the pane's output a line at a time.
        marker_after="\\n" if capped else "",
        marker_printf=f"\\033]7777;p-end-{job_id}\\007",
        marker_text=quote(f"p-end-{job_id}"),
        marker_len=len(end_marker(job_id)),
        job_id=job_id,
        job_dir=quote(job_dir),
        tmux_socket=quote(tmux_socket),
        events_log=quote(events_log),
        expect_client="1" if expect_client else "",
        client_polls=CLIENT_POLLS,
        log_end=JobFile.LOG_END,
        pending=JobFile.PENDING,
        ended_at=JobFile.ENDED_AT,
        output=JobFile.OUTPUT,
        exitcode=JobFile.EXIT_CODE,
        notify=JobFile.NOTIFY,
        notify_log=JobFile.NOTIFY_LOG,
        worker=JobFile.WORKER,
    )


def _seconds(value: float) -> str:
    """A number of seconds as `sleep` and JSON both read it (never 1e+06)."""
    return str(int(value)) if value == int(value) else f"{value:.3f}"


def status_sh(job_dir: str) -> str:
    return STATUS_SH.format(job_dir=quote(job_dir), ended_at=JobFile.ENDED_AT, exitcode=JobFile.EXIT_CODE,
                            started_at=JobFile.STARTED_AT)
