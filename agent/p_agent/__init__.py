"""p-agent: the worker side of `p`.

One long-lived process per worker user and version serves requests on a unix
socket under ``~/.p/run/``; the client reaches it through a unix socket
forwarded by its multiplexed OpenSSH connection. Jobs themselves need no
Python: each runs in tmux under a generated ``run.sh`` that records its output
and exit code in files, so the agent may exit or be replaced while jobs run.

Stdlib only: this package is frozen into static binaries for three archs.
"""
