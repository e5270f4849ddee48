"""How long a machine is lent: ``join --until 18:00`` or ``--for 3h``, and ``lend --until``.

At that time the node drains, by the same path as its owner coming back, and leaves. Times
are this machine's local clock; the agent keeps the end as a Unix time.
"""

from __future__ import annotations

import datetime as dt
import re
import time

from .errors import LanrayError

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
MAX_SECONDS = 366 * 86400


def parse_for(text: str) -> float:
    """Seconds in ``20s``, ``90m``, ``3h``, ``1h30m``; one line for anything else."""
    got = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or got is None or not any(got.groups()):
        raise LanrayError(f"--for {text!r}: give a duration such as 20s, 90m, 3h or 1h30m")
    h, m, s = (int(g or 0) for g in got.groups())
    seconds = h * 3600 + m * 60 + s
    if not 0 < seconds <= MAX_SECONDS:
        raise LanrayError(f"--for {text!r}: between 1 second and a year")
    return float(seconds)


def parse_until(text: str, now: float | None = None) -> float:
    """The Unix time of ``HH:MM`` (today, or tomorrow when that has passed), of
    ``YYYY-MM-DD HH:MM``, or of ``@UNIXTIME``; one line for anything else."""
    now = time.time() if now is None else now
    raw = text.strip()
    if raw.startswith("@"):
        try:
            when = float(raw[1:])
        except ValueError:
            raise LanrayError(f"--until {text!r}: not a time") from None
    else:
        here = dt.datetime.fromtimestamp(now).astimezone()
        try:
            if len(raw) <= 5:
                clock = dt.datetime.strptime(raw, "%H:%M").time()
                day = dt.datetime.combine(here.date(), clock, here.tzinfo)
                if day.timestamp() <= now:
                    day += dt.timedelta(days=1)
            else:
                day = dt.datetime.strptime(raw, "%Y-%m-%d %H:%M").replace(tzinfo=here.tzinfo)
        except ValueError:
            raise LanrayError(
                f"--until {text!r}: give a time such as 18:00 or '2026-12-24 18:00'"
            ) from None
        when = day.timestamp()
    if not now < when <= now + MAX_SECONDS:
        raise LanrayError(f"--until {text!r}: that is not in the coming year")
    return when


def until_from(until: str | None, for_: str | None, now: float | None = None) -> float | None:
    """The end that ``--until`` or ``--for`` give (not both), or None."""
    if until and for_:
        raise LanrayError("give --until or --for, not both")
    now = time.time() if now is None else now
    if for_:
        return now + parse_for(for_)
    if until:
        return parse_until(until, now)
    return None


def parse_when(text: str, now: float | None = None) -> float:
    """``host --expires``: a time (``18:00``) or a duration (``6h``), as a Unix time."""
    now = time.time() if now is None else now
    if ":" in text or text.strip().startswith("@"):
        return parse_until(text, now)
    return now + parse_for(text)


def ends_line(ends: float, now: float | None = None) -> str:
    """``the cluster ends at 18:00 (in 2 h 5 min)`` for ``status`` and the header."""
    now = time.time() if now is None else now
    left = max(0, int(ends - now))
    h, m = left // 3600, (left % 3600) // 60
    span = f"{h} h {m} min" if h else (f"{m} min" if m else "under a minute")
    return f"the cluster ends {describe(ends, now).replace('until', 'at', 1)} (in {span})"


WARN_BEFORE_S = 600  # the header warns from 10 minutes before the cluster ends


def describe(until: float, now: float | None = None) -> str:
    """``until 18:00`` (today), ``until Dec 24 18:00`` (another day)."""
    now = time.time() if now is None else now
    end = dt.datetime.fromtimestamp(until).astimezone()
    today = dt.datetime.fromtimestamp(now).astimezone().date()
    if end.date() == today:
        return f"until {end:%H:%M}" if end.second == 0 else f"until {end:%H:%M:%S}"
    return f"until {end:%b %d %H:%M}"
