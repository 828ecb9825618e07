"""The one table renderer: `docker ps`-style columns, plain text (fast)."""

from __future__ import annotations

from collections.abc import Sequence


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines
    )


def clip(text: str, width: int) -> str:
    """One line of at most ``width`` characters, terminal escapes and other
    unprintable characters shown as escapes (`\x1b`), never sent as is."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    # Times are kept to the millisecond: round away float noise first, so
    # 1.9999999 shows as the worker's status bar shows 2.000 (see run.sh).
    total = max(0, int(round(seconds, 3)))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def size(count: int) -> str:
    """Bytes as people read them: `512 B`, `3 MiB` (rounded down)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count} {unit}"
        count //= 1024
    return f"{count} TiB"


def clock(moment: float) -> str:
    """A Unix time as the local date and time, to the second."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))
