"""The lending loop with a fake clock, a fake Ray and the real policy: the owner's return
drains and stops Ray at once; lending comes back only after the hysteresis; pause/resume."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from lanray_tui.core import protocol as p
from lanray_tui.core.agent.lending_loop import LendingLoop
from lanray_tui.core.agent.state import NodeState, Role
from lanray_tui.core.agent.supervisor import RaySupervisor
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.lending import Lender, Policy
from lanray_tui.core.resources import InputIdle, Sample
from tests.helpers.clock import FakeClock
from tests.helpers.fake_ray import NODE_IP, FakeRayView, FakeStarter
from tests.helpers.samples import sample

AWAY = InputIdle(3600.0, "keyboard")
BACK = InputIdle(2.0, "keyboard")


class Machine:
    def __init__(self) -> None:
        self.ray_root_pid: int | None = None
        self.now = sample()
        self.idle = AWAY
        self.closed = False

    def sample(self) -> Sample:
        return self.now

    def __call__(self) -> InputIdle:
        return self.idle

    def close(self) -> None:
        self.closed = True


def make(tmp_path: Path, resume_after_s: float = 60.0) -> tuple[LendingLoop, Machine, FakeRayView]:
    clock = FakeClock()
    node = NodeState(role=Role.WORKER, creds=Credentials.new("t"), node_ip=NODE_IP)
    starter = FakeStarter(tmp_path / "ray.log")
    view = FakeRayView(starter)
    sup = RaySupervisor(node, clock, starter, view, starter.log, 5.0)
    starter(None)  # Ray runs
    sup.ray = starter.current
    machine = Machine()
    policy = Lender(Policy(idle_minutes=5, resume_after_s=resume_after_s), clock)
    loop = LendingLoop(
        node, clock, sup, view, machine, machine, policy, True, 30, started_at=clock.now - 7200
    )
    return loop, machine, view


async def test_owner_back_drains_then_stops_ray(tmp_path: Path) -> None:
    loop, machine, view = make(tmp_path)
    await loop.step()
    assert loop.node.lent.is_set() and loop.sample["cpus"] == 8
    machine.idle = BACK
    await loop.step()
    assert not loop.node.lent.is_set()
    assert loop.node.lending["state"] == "owner-active"
    assert view.drains == [("id-me", 30, loop.node.lending["reason"])]
    assert loop.supervisor.ray is not None and loop.supervisor.ray.stopped  # type: ignore[attr-defined]


async def test_drain_waits_for_running_tasks_up_to_the_deadline(tmp_path: Path) -> None:
    loop, _, view = make(tmp_path)
    view.tasks = 2
    t0 = loop.clock.monotonic()
    assert await loop.drain_and_wait(10, "owner back")
    assert loop.clock.monotonic() - t0 == pytest.approx(10.0)
    view.tasks = 0
    t0 = loop.clock.monotonic()
    assert await loop.drain_and_wait(10, "owner back")
    assert loop.clock.monotonic() == t0


async def test_lends_again_only_after_the_hysteresis(tmp_path: Path) -> None:
    loop, machine, _ = make(tmp_path, resume_after_s=60)
    clock: FakeClock = loop.clock  # type: ignore[assignment]
    machine.idle = BACK
    await loop.step()
    assert not loop.node.lent.is_set()
    machine.idle = InputIdle(600.0, "keyboard")  # away again
    await loop.step()
    assert not loop.node.lent.is_set() and "lending again in" in loop.node.lending["reason"]
    clock.now += 59
    await loop.step()
    assert not loop.node.lent.is_set()
    clock.now += 2
    await loop.step()
    assert loop.node.lent.is_set() and loop.node.lending["state"] == "lending"


async def test_pause_and_resume_by_hand(tmp_path: Path) -> None:
    loop, _, view = make(tmp_path)
    got = await loop.op_pause(p.PauseRequest(reason="exam", deadline_s=3))
    assert got == p.LendingReply("paused", True)
    assert view.drains[-1] == ("id-me", 3, "exam")
    assert loop.node.manual == "paused" and not loop.node.lent.is_set()
    await loop.step()  # the policy does not lend a node paused by hand
    assert not loop.node.lent.is_set()
    assert await loop.op_pause(p.PauseRequest()) == p.LendingReply("paused", False)
    with pytest.raises(LanrayError, match="start it first"):
        await loop.op_restart_ray(p.RestartRayRequest())
    assert await loop.op_resume(p.ResumeRequest()) == p.LendingReply("lending")
    assert loop.node.lent.is_set() and loop.node.manual == "auto"


@pytest.mark.parametrize("bad", ["soon", -1, [1], 10**9])
def test_a_bad_deadline_is_one_line(bad: object) -> None:
    with pytest.raises(LanrayError, match="deadline_s"):
        p.PauseRequest.of(deadline_s=bad)


async def test_the_host_does_not_pause(tmp_path: Path) -> None:
    loop, _, _ = make(tmp_path)
    loop.node.role = Role.HOST
    with pytest.raises(LanrayError, match="only joined nodes pause"):
        await loop.op_pause(p.PauseRequest())
    assert await loop.op_stop_ray(p.StopRayRequest()) == p.LendingReply("stopped", False)
    assert not loop.node.lent.is_set()


async def test_run_samples_every_second_reads_input_between_and_closes_the_reader(
    tmp_path: Path,
) -> None:
    loop, machine, _ = make(tmp_path)
    clock: FakeClock = loop.clock  # type: ignore[assignment]
    samples: list[float] = []
    reads: list[float] = []
    real_sample, real_read = machine.sample, machine.__call__

    def sample() -> Sample:
        samples.append(clock.now)
        return real_sample()

    class Reader:
        def __call__(self) -> InputIdle:
            reads.append(clock.now)
            return real_read()

        def close(self) -> None:
            machine.close()

    machine.sample = sample  # type: ignore[method-assign]
    loop.watcher = Reader()

    async def stop_later() -> None:
        while len(clock.sleeps) < 12:
            await asyncio.sleep(0)
        loop.node.stopping.set()

    await asyncio.gather(loop.run(), stop_later())
    assert clock.sleeps[:12] == [0.25] * 12 and machine.closed
    assert [b - a for a, b in itertools.pairwise(samples)][:2] == [1.0, 1.0]
    assert [b - a for a, b in itertools.pairwise(reads)][:4] == [0.25] * 4


async def test_owner_back_between_samples_drains_within_a_quarter_second(
    tmp_path: Path,
) -> None:
    loop, machine, view = make(tmp_path)
    await loop.step()
    t0 = loop.clock.monotonic()
    drained_at: list[float] = []
    real_drain = view.drain

    def drain(node_id: str, deadline_s: int, reason: str) -> bool:
        drained_at.append(loop.clock.monotonic())
        return real_drain(node_id, deadline_s, reason)

    view.drain = drain  # type: ignore[method-assign]
    machine.idle = BACK
    await loop.watch_input(1.0)
    assert drained_at == [t0 + 0.25] and not loop.node.lent.is_set()
    assert loop.node.lending["reason"].startswith("owner active: keyboard used")


async def test_the_drain_counts_down_then_keeps_the_reason(tmp_path: Path) -> None:
    loop, machine, view = make(tmp_path)
    clock: FakeClock = loop.clock  # type: ignore[assignment]
    view.tasks = 1
    seen: list[str] = []
    real_sleep = clock.sleep

    async def sleep(seconds: float) -> None:
        seen.append(loop.node.lending["reason"])
        if len(seen) == 3:
            view.tasks = 0
        await real_sleep(seconds)

    clock.sleep = sleep  # type: ignore[method-assign]
    await loop.step()
    machine.idle = BACK
    await loop.step()
    assert seen[:3] == [
        "owner back, draining (30 s left)",
        "owner back, draining (30 s left)",
        "owner back, draining (29 s left)",
    ]
    assert not loop.node.lent.is_set() and "draining" not in loop.node.lending["reason"]


def test_the_draining_reason() -> None:
    from lanray_tui.core.agent.lending_loop import draining

    assert draining("owner-active", "owner active: x", 41.2) == "owner back, draining (41 s left)"
    assert draining("paused", "exam", 3) == "exam; draining (3 s left)"


async def test_the_gcs_helper_is_warmed_once_per_ray_node(tmp_path: Path) -> None:
    loop, _, view = make(tmp_path)
    await loop.step()
    assert view.warmed == 0  # the supervisor has not seen this node listed yet
    assert await loop.supervisor.listed()
    assert loop.supervisor.node_id == "id-me"
    await loop.step()
    await loop.step()
    assert view.warmed == 1


async def test_the_drain_asks_the_head_nothing_once_the_node_id_is_known(
    tmp_path: Path,
) -> None:
    loop, _, view = make(tmp_path)
    assert await loop.supervisor.listed()
    asked: list[float] = []
    real_nodes = view.nodes

    def nodes(timeout: float = 5.0) -> list:  # type: ignore[type-arg]
        asked.append(timeout)
        return real_nodes(timeout)

    view.nodes = nodes  # type: ignore[method-assign]
    assert await loop.drain_and_wait(10, "owner back")
    assert view.drains[-1][0] == "id-me" and asked == []


async def test_lent_until_a_time_then_drains_and_leaves(tmp_path: Path) -> None:
    from lanray_tui.core.agent.state import StopCause

    loop, _, view = make(tmp_path)
    clock: FakeClock = loop.clock  # type: ignore[assignment]
    got = await loop.op_lend(p.LendRequest(until=clock.time() + 20))
    assert got.state == "lending" and got.until.startswith("until ")
    assert loop.node.lending_view()["until"] == got.until  # heartbeats carry it to the host
    await loop.step()
    assert loop.node.lent.is_set() and not loop.node.stopping.is_set()
    clock.now += 21
    await loop.step()  # the time is up: drain as when the owner comes back, then leave
    assert view.drains and view.drains[-1][1] == 30
    assert not loop.node.lent.is_set() and loop.node.stop_cause is StopCause.LEAVE
    assert "the time is up" in loop.node.lending["reason"]
    assert "until" not in loop.node.lending_view()


async def test_lend_refuses_a_past_time_and_clears_with_zero(tmp_path: Path) -> None:
    loop, _, _ = make(tmp_path)
    with pytest.raises(LanrayError, match="has passed"):
        await loop.op_lend(p.LendRequest(until=loop.clock.time() - 1))
    await loop.op_lend(p.LendRequest(until=loop.clock.time() + 60))
    assert (await loop.op_lend(p.LendRequest(until=0))).until == ""
    assert "until" not in loop.node.lending_view()


async def test_the_host_ends_the_cluster_at_its_expiry(tmp_path: Path) -> None:
    from lanray_tui.core.agent.state import StopCause

    loop, _, _ = make(tmp_path)
    clock: FakeClock = loop.clock  # type: ignore[assignment]
    loop.node.role = Role.HOST
    loop.node.cluster_ends = clock.time() + 5
    await loop.step()
    assert not loop.node.stopping.is_set()
    clock.now += 6
    await loop.step()
    assert loop.node.stop_cause is StopCause.LEAVE
    assert loop.node.detail == "the cluster's time is up"


async def test_idle_since_the_start_by_another_clock_is_consent(tmp_path: Path) -> None:
    """The input reader's "idle since I started" (wall clock) may fall a hair short of the
    agent's age (monotonic clock): still no input since the start, so it lends."""
    loop, machine, view = make(tmp_path)
    clock: FakeClock = loop.clock  # type: ignore[assignment]
    loop.started_at = clock.now - 0.050421
    machine.idle = InputIdle(0.050237, "keyboard or touchpad")
    await loop.step()
    assert loop.node.lent.is_set() and not view.drains
    clock.now += 5
    machine.idle = InputIdle(0.1, "keyboard or touchpad")  # then a key: the owner
    await loop.step()
    assert not loop.node.lent.is_set() and view.drains


async def test_a_raylet_that_ended_itself_leaves_nothing_to_wait_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray 2.60 ends a drained raylet once it is idle, and the task list may show its last
    tasks RUNNING for a while after: the drain ends when the raylet is gone (in the lab it
    waited its whole deadline, 60 s, on those). Ray that cannot be seen (in a container)
    is still asked for its running tasks."""
    from lanray_tui.adapters import system

    loop, _, view = make(tmp_path)
    view.tasks = 2  # what the task list still says
    # before the drain, its first poll (the worker leaves), then no raylet any more
    seen = iter([["ray::RayTrainWorker"], ["ray::RayTrainWorker"]])
    monkeypatch.setattr(system, "ray_work", lambda root: next(seen, None))
    t0 = loop.clock.monotonic()
    assert await loop.drain_and_wait(10, "owner back")
    assert 0 < loop.clock.monotonic() - t0 < 10
    monkeypatch.setattr(system, "ray_work", lambda root: None)  # never seen: ask Ray
    t0 = loop.clock.monotonic()
    assert await loop.drain_and_wait(10, "owner back")
    assert loop.clock.monotonic() - t0 == pytest.approx(10.0)
