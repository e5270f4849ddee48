"""The Ray supervisor with a fake clock and a fake Ray: readiness, backoff, kicks, pauses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lanray_tui.core.agent.start_policy import StartRetry
from lanray_tui.core.agent.state import AgentState, NodeState, Role, StopCause
from lanray_tui.core.agent.supervisor import RESTART_BACKOFF_S, RaySupervisor
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.models import NodeInfo
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
    sup, _, _ = make(tmp_path, fail_with=LanrayError("ray: command not found"))  # permanent
    await asyncio.wait_for(sup.run(), 5)
    assert sup.node.state is AgentState.FAILED
    assert sup.node.detail == "ray: command not found"
    assert sup.node.stop_cause is StopCause.FAILED


async def test_a_first_start_that_never_gets_ready_retries_with_backoff(tmp_path: Path) -> None:
    sup, starter, clock = make(tmp_path, marker=False)
    sup.retry = StartRetry(rng=lambda lo, hi: 1.0)
    task = asyncio.create_task(sup.run())
    await until(lambda: len(clock.waits) >= 7)
    assert clock.waits[:7] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert all(r.stopped for r in starter.started[:7])
    seen = sup.node.detail
    assert seen.startswith("Ray start failed: not ready in time; retrying in ")
    assert sup.node.stop_cause is StopCause.NONE  # it never gives up on a passing cause
    starter.marker = True  # the GCS is no longer busy
    await until(lambda: sup.node.state is AgentState.READY)
    assert sup.retry.attempt == 0
    sup.node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)


def test_the_status_line_says_why_when_and_which_attempt() -> None:
    retry = StartRetry(rng=lambda lo, hi: 0.875)
    retry.next_delay()
    retry.next_delay()
    delay = retry.next_delay()
    assert delay == 7.0
    line = retry.line(
        "The current node timed out during startup. ... the GCS has become overloaded", delay
    )
    assert line == "Ray start failed: GCS busy; retrying in 7 s (attempt 3)"


def test_jitter_stays_within_its_bounds() -> None:
    retry = StartRetry()
    for attempt in range(1, 40):
        raw = min(60.0, 2.0 * 2 ** (attempt - 1))
        assert 0.5 * raw <= retry.next_delay() <= 1.5 * raw


@pytest.mark.parametrize(
    "cause",
    [
        "Version mismatch: The cluster was started with: Ray: 2.59.0",
        "rpc error: UNAUTHENTICATED: invalid token",
        "Ray already runs on this node (pid 7) for another cluster ('x'); stop it with ...",
        "the 'podman' runtime is not available yet; use runtime.kind: native",
        "the Ray container exited at start with code 3: lanray-test: this ray is broken",
        "this node has no certificate of the cluster: pair again with a code",
    ],
)
async def test_causes_that_cannot_pass_end_the_agent(tmp_path: Path, cause: str) -> None:
    sup, _, clock = make(tmp_path, fail_with=LanrayError(cause))
    await asyncio.wait_for(sup.run(), 5)
    assert sup.node.state is AgentState.FAILED and sup.node.detail == cause
    assert clock.waits == []


@pytest.mark.parametrize(
    "cause",
    [
        "The current node timed out during startup. the GCS has become overloaded",
        "Failed to connect to GCS at address 10.0.0.1:6379 within 5 seconds",
        "Ray exited with code 1: no output",
    ],
)
async def test_causes_that_can_pass_are_retried(tmp_path: Path, cause: str) -> None:
    sup, starter, clock = make(tmp_path, fail_with=LanrayError(cause))
    task = asyncio.create_task(sup.run())
    await until(lambda: len(clock.waits) >= 2)
    assert sup.node.state in (AgentState.RESTARTING, AgentState.STARTING)
    assert "retrying in" in sup.node.detail and not sup.node.stopping.is_set()
    starter.fail_with = None
    await until(lambda: sup.node.state is AgentState.READY)
    sup.node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)


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


class NewIdsView(FakeRayView):
    """Each start of Ray is a Ray node of its own id; an earlier one may still read ALIVE
    (the head has not noticed it died yet)."""

    stale_alive = False

    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        out = []
        for i, ray in enumerate(self.starter.started):
            alive = ray.poll() is None or (self.stale_alive and i < len(self.starter.started) - 1)
            out.append(NodeInfo(f"id-{i}", self.ip, "me", self.role,
                                "ALIVE" if alive else "DEAD", 1.0, 0.0, 1.0))  # fmt: skip
        return out


async def test_a_worker_is_ready_once_the_head_lists_its_new_node(tmp_path: Path) -> None:
    """Ray says it started only on its next look at the GCS (once a second); the head's
    list shows the new node sooner, and a node the head knew before this start (its
    earlier Ray, not yet marked DEAD) does not count."""
    node = NodeState(role=Role.WORKER, creds=Credentials.new("t"), node_ip=NODE_IP)
    log = tmp_path / "ray.log"
    starter = FakeStarter(log, marker=False)  # Ray has not said it started
    view = NewIdsView(starter)
    sup = RaySupervisor(node, FakeClock(), starter, view, log, start_timeout_s=5.0)
    task = asyncio.create_task(sup.run())
    await until(lambda: sup.node.state is AgentState.READY)  # id-0: new, ALIVE
    view.stale_alive = True  # from now on the head still lists id-0 ALIVE after it dies
    starter.current.crash(1)
    await until(lambda: len(starter.started) == 2)
    await until(lambda: sup.node.state is AgentState.READY)  # id-1, not the stale id-0
    assert sup._earlier == frozenset({"id-0"})
    sup.node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)


async def test_a_stale_node_alone_does_not_make_a_worker_ready(tmp_path: Path) -> None:
    node = NodeState(role=Role.WORKER, creds=Credentials.new("t"), node_ip=NODE_IP)
    log = tmp_path / "ray.log"
    starter = FakeStarter(log, marker=False)
    view = NewIdsView(starter)
    sup = RaySupervisor(node, FakeClock(), starter, view, log, start_timeout_s=5.0)
    task = asyncio.create_task(sup.run())
    await until(lambda: sup.node.state is AgentState.READY)
    listed = view.nodes

    def only_the_old(timeout: float = 5.0) -> list[NodeInfo]:
        return [n for n in listed(timeout) if n.node_id == "id-0"]

    view.stale_alive = True
    view.nodes = only_the_old  # type: ignore[method-assign]  # the new node never registers
    starter.current.crash(1)
    await until(lambda: "not ready after 5 s" in sup.node.detail)
    assert sup.node.state is not AgentState.READY
    sup.node.stop(StopCause.SIGNAL)
    await asyncio.wait_for(task, 5)
