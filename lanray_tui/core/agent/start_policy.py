"""What the supervisor does when Ray fails to start: retry a cause that can pass (the head
not up yet, a startup timeout while the GCS is busy in a join storm) with jittered
exponential backoff, and end the agent only for one that cannot (a refused token, a version
mismatch, a Ray that belongs to something else, a runtime that is not there).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

#: Causes that will not pass by waiting (matched in lower case).
PERMANENT = (
    "version mismatch",
    "unauthenticated",
    "authentication failed",
    "invalid token",
    "already runs on this node",
    "is already running",
    "not available yet",
    "no such file or directory",
    "command not found",
    "permission denied",
    "exited at start",  # the runtime's Ray died before it could try: a broken image or install
    "no certificate of the cluster",  # Ray never runs without TLS: pairing gives one
)

#: Short names for the usual passing causes, for the one status line.
_SHORT = (
    ("overloaded", "GCS busy"),
    ("timed out during startup", "startup timed out"),
    ("failed to connect to gcs", "head not reachable"),
    ("unable to connect to gcs", "head not reachable"),
    ("connection refused", "head not reachable"),
    ("not ready after", "not ready in time"),
)

BASE_S = 2.0
CAP_S = 60.0
JITTER = (0.5, 1.5)


def is_permanent(detail: str) -> bool:
    low = detail.lower()
    return any(p in low for p in PERMANENT)


def short_cause(detail: str) -> str:
    low = detail.lower()
    for needle, name in _SHORT:
        if needle in low:
            return name
    line = detail.strip().splitlines()[0] if detail.strip() else "no reason given"
    return line if len(line) <= 120 else line[:117] + "..."


@dataclass
class StartRetry:
    """Backoff for failed starts: ``BASE_S * 2**(attempt-1)``, capped, times a jitter in
    ``JITTER`` so that nodes switched on in the same minute spread out."""

    rng: Callable[[float, float], float] = random.uniform
    attempt: int = 0

    def next_delay(self) -> float:
        self.attempt += 1
        raw = min(CAP_S, BASE_S * 2 ** (self.attempt - 1))
        return raw * self.rng(*JITTER)

    def reset(self) -> None:
        self.attempt = 0

    def line(self, detail: str, delay: float) -> str:
        return (
            f"Ray start failed: {short_cause(detail)}; retrying in {delay:.0f} s "
            f"(attempt {self.attempt})"
        )
