"""Reading a job's log: why it failed in one line, its last line that says something, its tail."""

from __future__ import annotations

from .jobs_records import LOG_TAIL_LINES, _one_line


def summarize_failure(ray_message: str, logs: str) -> str:
    """One line saying why a job failed: Ray's reason, then the last line its driver printed.

    Ray's message for a non-zero exit carries the whole log; only its first sentence is kept.
    """
    first = (ray_message or "").strip().splitlines()[0] if (ray_message or "").strip() else ""
    for marker in (", last available logs", ". No logs available", ", logs:"):
        cut = first.find(marker)
        if cut >= 0:
            first = first[:cut]
    first = first.rstrip(".: ")
    last = last_log_line(logs)
    if last and last not in first:
        return _one_line(f"{first}: {last}" if first else last)
    return _one_line(first or "the job failed")


def last_log_line(logs: str) -> str:
    """The last line of a job's log that says something (Ray's own INFO lines skipped)."""
    for line in reversed((logs or "").splitlines()):
        text = line.strip()
        if not text or _is_ray_chatter(text):
            continue
        return text
    return ""


def log_tail(logs: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join((logs or "").splitlines()[-lines:])


def _is_ray_chatter(line: str) -> bool:
    return (" INFO " in line and ".py:" in line and " -- " in line) or line.startswith(
        "Running entrypoint for job"
    )
