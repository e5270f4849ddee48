"""A fake clock for the agent's parts: sleeps and timed waits advance time at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from lanray_tui.core.agent.state import RealClock


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:  # the wall clock: 1.7e9 + the same fake seconds
        return 1_700_000_000.0 + self.now

    def __call__(self) -> float:  # as a plain clock callable (lending.Lender)
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    async def wait_any(self, events: Iterable[asyncio.Event], timeout: float | None = None) -> None:
        events = list(events)
        for _ in range(20):  # let other tasks run first: one of them may set an event
            if any(e.is_set() for e in events):
                return
            await asyncio.sleep(0)
        if timeout is None:
            await RealClock().wait_any(events, 5.0)
            return
        self.waits.append(timeout)
        self.now += timeout
