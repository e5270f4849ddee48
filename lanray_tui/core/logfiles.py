"""Reading the ends of log files: for failure messages and readiness markers."""

from __future__ import annotations

from pathlib import Path


def tail(path: Path, lines: int = 3, start: int = 0) -> str:
    """The last non-empty lines of ``path`` after byte ``start``, joined into one line."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def contains(path: Path, start: int, marker: str) -> bool:
    """True if ``marker`` appears in ``path`` after byte ``start``."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return marker.encode() in f.read()
    except OSError:
        return False
