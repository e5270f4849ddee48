"""Heartbeats with a fake clock: the link goes LOST after the missed beats and, when the host
answers again, the supervisor is asked to rejoin once; the host's book says UNREACHABLE."""

from __future__ import annotations

from typing import Any

import pytest

from lanray_tui.core.agent.heartbeats import HeartbeatReceiver, HeartbeatSender
from lanray_tui.core.agent.start_gate import StartGate
from lanray_tui.core.agent.state import NodeState, Role
from lanray_tui.core.cluster_api import HeartbeatBook
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.errors import LanrayError
from tests.helpers.clock import FakeClock


class Host:
    def __init__(self) -> None:
        self.up = True
        self.beats: list[dict[str, Any]] = []

    async def send(self, beat: dict[str, Any], timeout: float) -> bool:
        self.beats.append(beat)
        return self.up


def sender(host: Host, rejoins: list[int]) -> HeartbeatSender:
    node = NodeState(role=Role.WORKER, creds=Credentials.new("t"))

    async def on_back() -> None:
        rejoins.append(1)

    return HeartbeatSender(node, FakeClock(), host.send, lambda: {"n": 1}, on_back, 1.0, 3)


async def test_link_lost_after_missed_beats_and_rejoin_once_back() -> None:
    host, rejoins = Host(), []
    s = sender(host, rejoins)
    await s.beat_once()
    assert s.node.link == "UP"
    host.up = False
    for _ in range(2):
        await s.beat_once()
    assert s.node.link == "UP"  # two missed: not yet
    await s.beat_once()
    assert s.node.link == "LOST"
    await s.beat_once()
    host.up = True
    await s.beat_once()
    assert s.node.link == "UP" and rejoins == [1]
    await s.beat_once()
    assert rejoins == [1]


async def test_a_short_gap_does_not_rejoin() -> None:
    host, rejoins = Host(), []
    s = sender(host, rejoins)
    host.up = False
    await s.beat_once()
    host.up = True
    await s.beat_once()
    assert rejoins == [] and s.node.link == "UP"


async def test_run_beats_once_per_interval() -> None:
    host, rejoins = Host(), []
    s = sender(host, rejoins)
    clock: FakeClock = s.clock  # type: ignore[assignment]

    async def send(beat: dict[str, Any], timeout: float) -> bool:
        clock.now += 0.25  # a beat takes a quarter of the interval
        if len(host.beats) >= 4:
            s.node.stopping.set()
        return await host.send(beat, timeout)

    s.send = send
    await s.run()
    assert len(host.beats) == 5
    assert clock.waits == [0.75] * 4  # after the fifth, stopping is set: no wait


async def test_a_state_change_beats_at_once() -> None:
    """Ray became ready: the host hears it now, not at the next interval (its start gate
    gives the slot to the next node)."""
    host, rejoins = Host(), []
    s = sender(host, rejoins)
    clock: FakeClock = s.clock  # type: ignore[assignment]

    async def send(beat: dict[str, Any], timeout: float) -> bool:
        if len(host.beats) == 1:
            s.node.beat_now.set()  # set while the first beat is out: the next goes at once
        if len(host.beats) >= 2:
            s.node.stopping.set()
        return await host.send(beat, timeout)

    s.send = send
    await s.run()
    assert len(host.beats) == 3 and clock.waits == [1.0]


def test_host_book_marks_silent_workers_unreachable() -> None:
    book = HeartbeatBook(1.0, 3)
    node = NodeState(role=Role.HOST, creds=Credentials.new("t"))
    import asyncio

    asyncio.run(
        HeartbeatReceiver(node, book, StartGate(4, 150.0)).op_heartbeat({"node_ip": "10.0.0.2"})
    )
    t = book.beats["10.0.0.2"].received
    assert book.link("10.0.0.2", t + 3.0)[0] == "UP"
    assert book.link("10.0.0.2", t + 3.6)[0] == "UNREACHABLE"
    assert book.link("10.0.0.9") == ("n/a", None)


async def test_workers_refuse_heartbeats() -> None:
    node = NodeState(role=Role.WORKER, creds=Credentials.new("t"))
    with pytest.raises(LanrayError, match="heartbeats go to the host"):
        await HeartbeatReceiver(node, HeartbeatBook(1.0, 3), StartGate(4, 150.0)).op_heartbeat(
            {"node_ip": "x"}
        )
