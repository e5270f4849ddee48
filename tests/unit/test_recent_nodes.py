"""The host's last node list: status takes it while young and while nothing happened since
its fetch; a worker's new state or lending state, or a new worker, makes it stale."""

from __future__ import annotations

import asyncio

from lanray_tui.core.agent.heartbeats import HeartbeatReceiver
from lanray_tui.core.agent.recent_nodes import RecentNodes
from lanray_tui.core.agent.start_gate import StartGate
from lanray_tui.core.agent.state import NodeState, Role
from lanray_tui.core.cluster_api import HeartbeatBook
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.models import NodeInfo


class Ray:
    """Ray's node list, counting how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0
        self.listed = ["10.0.0.1"]

    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        self.asked += 1
        return [NodeInfo(node_id=ip, ip=ip, name=ip, role="worker", state="ALIVE", cpus=1.0,
                         gpus=0.0, memory_gb=1.0) for ip in self.listed]  # fmt: skip

    def usage(self) -> dict[str, tuple[float, float]]:
        return {}

    def running_tasks(self, node_id: str) -> int:
        return 0

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_young_list_is_kept_and_an_old_one_fetched_again() -> None:
    ray, clock = Ray(), Clock()
    recent = RecentNodes(ray, 2.5, clock)
    assert [n.ip for n in recent.recent()] == ["10.0.0.1"] and ray.asked == 1  # none kept yet
    ray.listed.append("10.0.0.2")
    clock.now += 2.0
    assert len(recent.recent()) == 1 and ray.asked == 1  # young: kept
    clock.now += 1.0
    assert len(recent.recent()) == 2 and ray.asked == 2  # 3 s old: asked again


def test_every_fetch_renews_the_kept_list() -> None:
    ray, clock = Ray(), Clock()
    recent = RecentNodes(ray, 2.5, clock)
    recent.nodes()  # the summary's, or a worker waiting to be listed
    ray.listed.append("10.0.0.2")
    clock.now += 2.0
    recent.nodes()
    clock.now += 2.0
    assert len(recent.recent()) == 2 and ray.asked == 2


def test_a_change_after_the_fetch_makes_it_stale() -> None:
    ray, clock = Ray(), Clock()
    recent = RecentNodes(ray, 2.5, clock)
    recent.nodes()
    clock.now += 0.1
    recent.changed()
    ray.listed.append("10.0.0.2")
    assert len(recent.recent()) == 2 and ray.asked == 2
    assert len(recent.recent()) == 2 and ray.asked == 2  # fetched after the change: kept


def test_a_new_worker_or_a_new_state_is_a_change_a_plain_beat_is_not() -> None:
    changes: list[int] = []
    node = NodeState(role=Role.HOST, creds=Credentials.new("t"))
    host = HeartbeatReceiver(node, HeartbeatBook(1.0, 3), StartGate(4, 150.0),
                             lambda: changes.append(1))  # fmt: skip

    def beat(state: str, lending: str, cpu: float) -> int:
        asyncio.run(host.op_heartbeat({"node_ip": "10.0.0.2", "state": state,
                                       "lending": {"state": lending, "reason": f"r{cpu}"},
                                       "resources": {"cpu_percent": cpu}}))  # fmt: skip
        return len(changes)

    assert beat("starting", "lending", 1.0) == 1  # a new worker
    assert beat("starting", "lending", 2.0) == 1  # new figures, a new reason: the same nodes
    assert beat("ready", "lending", 3.0) == 2  # its Ray is up
    assert beat("ready", "paused", 3.0) == 3  # withheld: its Ray stops
