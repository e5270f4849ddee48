"""What every part of the agent shares: its state machine, the node's live state, a clock.

The parts (supervisor, control server, heartbeats, lending loop, host services) each get a
:class:`NodeState` and a :class:`Clock` from the wiring in :mod:`.node`; a unit test hands
them a fake clock and fake outside systems instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from ..credentials import Credentials


class AgentState(str, Enum):
    """The supervisor's states, as ``info`` and ``status`` report them (``.value``)."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    PAUSED = "paused"
    FAILED = "failed"
    STOPPING = "stopping"


class StopCause(str, Enum):
    """Why the agent stops: only ``LEAVE`` also removes what the runtime made (containers)."""

    NONE = ""
    LEAVE = "leave"
    SIGNAL = "signal"
    FAILED = "failed"


class Role(str, Enum):
    HOST = "host"
    WORKER = "worker"


class Clock(Protocol):
    """Time as the parts see it: real in the agent, fake in unit tests."""

    def monotonic(self) -> float: ...

    def time(self) -> float:
        """The wall clock (Unix time): for ends the owner set, such as 'lend until 18:00'."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_any(self, events: Iterable[asyncio.Event], timeout: float | None = None) -> None:
        """Return when one of ``events`` is set, or after ``timeout`` seconds."""
        ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_any(self, events: Iterable[asyncio.Event], timeout: float | None = None) -> None:
        tasks = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class NodeState:
    """This node's live state, shared by the agent's parts (one event loop, no locks)."""

    role: Role
    creds: Credentials
    node_ip: str = ""
    state: AgentState = AgentState.STARTING
    detail: str = ""
    link: str = "n/a"  # worker: "UP" or "LOST" as its heartbeats see the host
    lending: dict[str, str] = field(
        default_factory=lambda: {"state": "lending", "reason": "lent to the cluster"}
    )
    manual: str = "auto"  # "paused" after 'lanray-tui pause' until 'resume'
    lend_until: float = 0.0  # Unix time this node stops lending and leaves (0: never)
    cluster_ends: float = 0.0  # the host: Unix time the whole cluster ends (0: never)
    stop_cause: StopCause = StopCause.NONE
    # Ray runs only while `lent` is set; `kick` wakes the supervisor to restart Ray now.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    lent: asyncio.Event = field(default_factory=asyncio.Event)
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    failure_told: asyncio.Event = field(default_factory=asyncio.Event)
    # a worker beats at once, not at its next interval (Ray became ready: the host's start
    # gate gives its slot to the next node)
    beat_now: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.lent.set()

    @property
    def is_host(self) -> bool:
        return self.role is Role.HOST

    def lending_view(self) -> dict[str, str]:
        """The lending state and reason, and when lending ends (for status and beats)."""
        view = dict(self.lending)
        if self.lend_until:
            from ..lend_time import describe

            view["until"] = describe(self.lend_until)
        return view

    def stop(self, cause: StopCause) -> None:
        if self.stop_cause is StopCause.NONE:
            self.stop_cause = cause
        self.stopping.set()

    def fail(self, detail: str) -> None:
        """A cause that will not pass: report it and stop."""
        self.state, self.detail = AgentState.FAILED, detail
        self.stop(StopCause.FAILED)
