"""PyInstaller entry point of the frozen p-agent (see build/freeze.sh)."""

from p_agent.__main__ import run

run()
