"""The host's start gate: how many joined nodes start Ray at the same time.

A lab switched on in the same minute sends every node's Ray start to the head at once; Ray's
GCS (and, in a lab on one machine, the CPUs) then time every one of them out, and their
retries meet again. So a worker asks the host before each start (the ``start`` op) and the
host lets ``slots`` of them start at once, first come first served; the others wait their
turn and say how many start before them. A node holds its slot until its heartbeat says it
is no longer starting (ready, paused, or waiting out a failed start), until its beats stop,
or at most ``hold_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..texts import WAITING_TURN

#: A waiter that has not asked again for this long left the queue (it asks every second).
WAITER_TTL_S = 10.0
#: A node whose beats stopped for this long gives its slot back.
SILENT_S = 10.0
#: At most this many nodes are remembered (members only reach this op; a bound all the same).
MAX_NODES = 4096


@dataclass
class _Grant:
    at: float
    seen: float  # the last beat or ask from the node


class StartGate:
    def __init__(
        self, slots: int, hold_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slots = max(1, slots)
        self.hold_s = hold_s
        self.clock = clock
        self.granted: dict[str, _Grant] = {}
        self.waiting: dict[str, tuple[float, float]] = {}  # ip -> (first asked, last asked)

    def ask(self, ip: str) -> tuple[bool, int]:
        """May ``ip`` start Ray now? (True, 0), or (False, how many start before it)."""
        now = self.clock()
        self._expire(now)
        if ip in self.granted:  # asking again: its last start is over (it failed)
            self.granted[ip] = _Grant(now, now)
            return True, 0
        first = self.waiting.get(ip, (now, now))[0]
        if ip not in self.waiting and len(self.waiting) >= MAX_NODES:
            return False, len(self.waiting)
        self.waiting[ip] = (first, now)
        order = sorted(self.waiting, key=lambda k: self.waiting[k][0])
        free = self.slots - len(self.granted)
        place = order.index(ip)
        if place < free:
            del self.waiting[ip]
            self.granted[ip] = _Grant(now, now)
            return True, 0
        return False, place - max(free, 0) + 1

    def beat(self, ip: str, state: str) -> None:
        """A heartbeat from ``ip``: a node that no longer starts gives its slot back."""
        grant = self.granted.get(ip)
        if grant is None:
            return
        if state == "starting":
            grant.seen = self.clock()
        else:
            del self.granted[ip]

    def starting(self) -> int:
        return len(self.granted)

    def _expire(self, now: float) -> None:
        for ip, grant in list(self.granted.items()):
            if now - grant.at > self.hold_s or now - grant.seen > SILENT_S:
                del self.granted[ip]
        for ip, (_, last) in list(self.waiting.items()):
            if now - last > WAITER_TTL_S:
                del self.waiting[ip]


def waiting_line(ahead: int) -> str:
    """The worker's status while it waits for its turn."""
    nodes = "node starts" if ahead == 1 else "nodes start"
    return f"{WAITING_TURN}: {ahead} {nodes} Ray before this one"
