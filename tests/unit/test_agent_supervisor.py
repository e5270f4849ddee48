"""The Ray supervisor with a fake clock and a fake Ray: readiness, backoff, kicks, pauses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lanray_tui.core.agent.state import AgentState, NodeState, Role, StopCause
from lanray_tui.core.agent.supervisor import RESTART_BACKOFF_S, RaySupervisor
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.errors import LanrayError
from tests.helpers.clock import FakeClock
from tests.helpers.fake_ray import NODE_IP, FakeRayView, FakeStarter


def make(tmp_path: Path, **starter_kw: object) -> tuple[RaySupervisor, FakeStarter, FakeClock]:
    node = NodeState(role=Role.WORKER, creds=Credentials.new("t"), node_ip=NODE_IP)
    log = tmp_path / "ray.log"
    starter = FakeStarter(log, **starter_kw)  # type: ignore[arg-type]
    clock = FakeClock()
    sup = RaySupervisor(node, clock, starter, FakeRayView(starter), log, start_timeout_s=5.0)
    return sup, starter, clock


async def until(pred: object, rounds: int = 2000) -> None:
    for _ in range(rounds):
        if pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


async def test_ready_once_the_head_lists_the_node(tmp_path: Path) -> None:
    sup, starter, _ = make(tmp_path)
    task = asyncio.create_task(sup.run())
    await until(lambda: sup.node.state is AgentState.READY)
    assert len(starter.started) == 1 and sup.running
    sup.node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)


async def test_crashes_back_off_then_reset_after_a_ready_run(tmp_path: Path) -> None:
    sup, starter, clock = make(tmp_path)
    task = asyncio.create_task(sup.run())
    for n in range(1, 6):
        await until(lambda n=n: len(starter.started) == n and sup.node.state is AgentState.READY)
        starter.current.crash(1)
        await until(lambda n=n: len(starter.started) == n + 1 or sup.node.stopping.is_set())
    # each crash came after a ready run, so the backoff starts over every time
    assert clock.waits == [RESTART_BACKOFF_S[0]] * 5
    sup.node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)


async def test_restarts_that_never_get_ready_back_off_exponentially(tmp_path: Path) -> None:
    sup, starter, clock = make(tmp_path)
    task = asyncio.create_task(sup.run())
    await until(lambda: sup.node.state is AgentState.READY)
    starter.marker = False  # from now on Ray never says it started: each try times out
    starter.current.crash(1)
    await until(lambda: len(clock.waits) >= 5)
    assert clock.waits[:5] == [1.0, 2.0, 5.0, 10.0, 10.0]
    assert sup.node.state in (AgentState.RESTARTING, AgentState.STARTING)
    assert "not ready after 5 s" in sup.node.detail
    sup.node.stop(StopCause.SIGNAL)
    await asyncio.wait_for(task, 5)


async def test_a_first_start_that_fails_ends_the_agent_with_the_reason(tmp_path: Path) -> None:
    sup, _, _ = make(tmp_path, fail_with=LanrayError("ray: command not found"))
    await asyncio.wait_for(sup.run(), 5)
    assert sup.node.state is AgentState.FAILED
    assert sup.node.detail == "ray: command not found"
    assert sup.node.stop_cause is StopCause.FAILED


async def test_a_first_start_that_never_gets_ready_fails(tmp_path: Path) -> None:
    sup, starter, _ = make(tmp_path, marker=False)
    await asyncio.wait_for(sup.run(), 5)
    assert sup.node.state is AgentState.FAILED
    assert sup.node.detail == "Ray was not ready after 5 s"
    assert starter.current.stopped


async def test_a_kick_restarts_at_once_without_backoff(tmp_path: Path) -> None:
    sup, starter, clock = make(tmp_path)
    task = asyncio.create_task(sup.run())
    await until(lambda: sup.node.state is AgentState.READY)
    await sup.restart_now("restarted by hand")
    await until(lambda: len(starter.started) == 2 and sup.node.state is AgentState.READY)
    assert clock.waits == []
    sup.node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)


async def test_withheld_node_is_paused_until_lent_again(tmp_path: Path) -> None:
    sup, starter, _ = make(tmp_path)
    sup.node.lending = {"state": "paused", "reason": "paused by hand"}
    sup.node.lent.clear()
    task = asyncio.create_task(sup.run())
    await until(lambda: sup.node.state is AgentState.PAUSED)
    assert starter.started == [] and sup.node.detail == "paused by hand"
    sup.node.lent.set()
    await until(lambda: sup.node.state is AgentState.READY)
    sup.node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("state", [AgentState.READY, AgentState.RESTARTING])
async def test_rejoin_if_lost_restarts_only_when_not_listed(
    tmp_path: Path, state: AgentState
) -> None:
    sup, starter, _ = make(tmp_path)
    task = asyncio.create_task(sup.run())
    await until(lambda: sup.node.state is AgentState.READY)
    sup.node.state = state
    await sup.rejoin_if_lost()
    restarted = state is not AgentState.READY
    assert sup.node.kick.is_set() == restarted or len(starter.started) == 2
    if restarted:
        await until(lambda: len(starter.started) == 2)
    else:
        assert len(starter.started) == 1
    sup.node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)
