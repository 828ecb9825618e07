"""What a job carries besides its command (issue 9): env, end to end on a
real worker."""

from __future__ import annotations

from conftest import PClient
from helpers import one_line_error

# Shell syntax in values must reach the job as text, never be evaluated.
TRICKY = "it's $(touch pwned) `id` \"q\" \\n $HOME ;|&"


def test_env_and_env_file_reach_the_job_and_the_record(p1: PClient) -> None:
    env_file = p1.workdir / "job.env"
    env_file.write_text(
        "# settings for the job\n"
        "\n"
        "PLAIN=one two   # a comment\n"
        "export EXPORTED=yes\n"
        "SINGLE='a \"b\" \\n # not a comment'\n"
        'DOUBLE="line1\\nline2 \\"q\\""\n'
        "EMPTY=\n"
        "OVERRIDDEN=from-file\n")
    result = p1("-n", "--env-file", str(env_file), "-e", "OVERRIDDEN=from-flag", "--env=TRICKY=" + TRICKY,
                 "-eSHORT=s", "--", 'printf "[%s]\\n" "$PLAIN" "$EXPORTED" "$SINGLE" "$DOUBLE" "$EMPTY" '
                 '"$OVERRIDDEN" "$TRICKY" "$SHORT"; ls')
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("[one two]\n[yes]\n[a \"b\" \\n # not a comment]\n[line1\nline2 \"q\"]\n[]\n"
                             f"[from-flag]\n[{TRICKY}]\n[s]\n")  # and `ls` found no `pwned`
    (job,) = p1.jobs()
    assert job["env"] == {"PLAIN": "one two", "EXPORTED": "yes", "SINGLE": 'a "b" \\n # not a comment',
                          "DOUBLE": 'line1\nline2 "q"', "EMPTY": "", "OVERRIDDEN": "from-flag",
                          "TRICKY": TRICKY, "SHORT": "s"}


def test_a_malformed_env_file_or_variable_is_one_line(p1: PClient) -> None:
    env_file = p1.workdir / "bad.env"
    env_file.write_text("# fine\nGOOD=1\nthis line has no equals sign\n")
    result = p1("-n", "--env-file", str(env_file), "--", "true")
    message = one_line_error(result)
    assert result.returncode == 2
    assert str(env_file) in message and "line 3" in message
    env_file.write_text("A='unclosed\n")
    message = one_line_error(p1("-n", "--env-file", str(env_file), "--", "true"))
    assert "line 1" in message
    for bad in (["-e", "1X=y"], ["-e", "NOEQUALS"], ["--env-file", str(p1.workdir / "missing.env")],
                ["-e"]):
        result = p1("-n", *bad, "--", "true")
        one_line_error(result)
        assert result.returncode == 2, bad
    assert p1.jobs() == []
