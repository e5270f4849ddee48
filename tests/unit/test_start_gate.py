"""The host's start gate (issue 21): a lab switched on at once starts a few nodes at a time,
first come first served, and a slot comes back when its node is ready, fails, or goes quiet."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lanray_tui.core.agent.heartbeats import HeartbeatReceiver
from lanray_tui.core.agent.start_gate import SILENT_S, WAITER_TTL_S, StartGate, waiting_line
from lanray_tui.core.agent.state import AgentState, NodeState, Role, StopCause
from lanray_tui.core.agent.supervisor import ADMIT_POLL_S, RaySupervisor
from lanray_tui.core.cluster_api import HeartbeatBook
from lanray_tui.core.credentials import Credentials
from tests.helpers.clock import FakeClock
from tests.helpers.fake_ray import NODE_IP, FakeRayView, FakeStarter


def test_two_slots_in_order_of_asking_and_the_rest_told_their_place() -> None:
    clock = FakeClock()
    gate = StartGate(2, hold_s=150.0, clock=clock)
    asks = [gate.ask(f"10.0.0.{i}") for i in range(2, 8)]
    assert asks == [(True, 0), (True, 0), (False, 1), (False, 2), (False, 3), (False, 4)]
    assert gate.starting() == 2
    gate.beat("10.0.0.2", "starting")  # still starting: it keeps its slot
    assert gate.ask("10.0.0.4") == (False, 1)
    gate.beat("10.0.0.2", "ready")  # ready: its slot goes to the first in line
    assert gate.ask("10.0.0.5") == (False, 1)  # 10.0.0.4 asked first
    assert gate.ask("10.0.0.4") == (True, 0)
    assert gate.ask("10.0.0.5") == (False, 1)
    gate.beat("10.0.0.3", "restarting")  # its start failed: waiting out its backoff
    assert gate.ask("10.0.0.5") == (True, 0)


def test_a_slot_comes_back_when_its_node_goes_quiet_or_takes_too_long() -> None:
    clock = FakeClock()
    gate = StartGate(1, hold_s=30.0, clock=clock)
    assert gate.ask("a") == (True, 0)
    assert gate.ask("b") == (False, 1)
    clock.now += SILENT_S + 1  # a's beats stopped (it crashed while starting)
    assert gate.ask("b") == (True, 0)
    for _ in range(5):  # b beats "starting" all along, but a start never takes this long
        clock.now += 7.0
        gate.beat("b", "starting")
    assert gate.ask("c") == (True, 0)


def test_a_waiter_that_stopped_asking_leaves_the_line() -> None:
    clock = FakeClock()
    gate = StartGate(1, hold_s=150.0, clock=clock)
    assert gate.ask("a") == (True, 0)
    assert gate.ask("gone") == (False, 1)
    clock.now += 5.0
    gate.beat("a", "starting")
    assert gate.ask("b") == (False, 2)
    clock.now += WAITER_TTL_S - 4.0
    gate.beat("a", "starting")
    gate.beat("a", "ready")
    assert gate.ask("b") == (True, 0)  # "gone" did not ask for longer than its TTL


def test_asking_again_after_a_failed_start_goes_at_once() -> None:
    gate = StartGate(1, hold_s=150.0, clock=FakeClock())
    assert gate.ask("a") == (True, 0)
    assert gate.ask("a") == (True, 0)
    assert gate.starting() == 1


def test_the_waiting_line_says_how_many_go_first() -> None:
    assert waiting_line(1) == "waiting for the host's go: 1 node starts Ray before this one"
    assert waiting_line(3) == "waiting for the host's go: 3 nodes start Ray before this one"


async def test_heartbeats_release_slots_through_the_hosts_receiver() -> None:
    clock = FakeClock()
    gate = StartGate(1, hold_s=150.0, clock=clock)
    host = HeartbeatReceiver(
        NodeState(role=Role.HOST, creds=Credentials.new("t")), HeartbeatBook(1.0, 3), gate
    )
    assert (await host.op_start({"node_ip": "10.0.0.2"})).go
    got = await host.op_start({"node_ip": "10.0.0.3"})
    assert (got.go, got.ahead) == (False, 1)
    await host.op_heartbeat({"node_ip": "10.0.0.2", "state": "ready"})
    assert (await host.op_start({"node_ip": "10.0.0.3"})).go


async def test_a_worker_waits_for_its_turn_and_says_so(tmp_path: Path) -> None:
    node = NodeState(role=Role.WORKER, creds=Credentials.new("t"), node_ip=NODE_IP)
    log = tmp_path / "ray.log"
    starter = FakeStarter(log)
    clock = FakeClock()
    turns = [(False, 3), (False, 2), (False, 1), (True, 0)]
    seen: list[str] = []

    async def admit() -> tuple[bool, int]:
        seen.append(node.detail)
        return turns.pop(0)

    sup = RaySupervisor(
        node, clock, starter, FakeRayView(starter), log, start_timeout_s=5.0, admit=admit
    )
    task = asyncio.create_task(sup.run())
    for _ in range(2000):
        if node.state is AgentState.READY:
            break
        await asyncio.sleep(0.001)
    assert node.state is AgentState.READY and len(starter.started) == 1
    assert clock.waits == [ADMIT_POLL_S] * 3  # asked again once a second meanwhile
    assert seen[1:] == [waiting_line(3), waiting_line(2), waiting_line(1)]
    node.stop(StopCause.SIGNAL)
    starter.current.stop()
    await asyncio.wait_for(task, 5)


async def test_the_kept_link_serves_heartbeats_and_the_gate_in_turns() -> None:
    """The beats and the start gate share one kept connection: concurrent asks must each
    get their own reply (interleaved, a start read a heartbeat's reply and its task died)."""
    import json

    from lanray_tui.core import protocol as p
    from lanray_tui.core.cluster_api import Link

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            op = json.loads(line)["op"]
            await asyncio.sleep(0.01)  # slow enough that a second ask would overlap
            reply = p.StartReply(False, 2) if op == "start" else p.HeartbeatReply()
            writer.write(p.ok_line(reply))
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = Link(lambda: ("127.0.0.1", port), lambda: None)  # type: ignore[arg-type,return-value]
    try:
        beats = [link.ask(p.HeartbeatRequest(node_ip="10.0.0.2"), 5.0) for _ in range(5)]
        starts = [link.ask(p.StartRequest(node_ip="10.0.0.2"), 5.0) for _ in range(5)]
        got = await asyncio.gather(*[x for pair in zip(beats, starts, strict=True) for x in pair])
        assert [type(g).__name__ for g in got] == ["HeartbeatReply", "StartReply"] * 5
        assert all(g.ahead == 2 for g in got[1::2])
        assert link.connects == 1
    finally:
        link.close()
        server.close()
        await server.wait_closed()


def test_join_waits_past_its_timeout_while_its_node_waits_its_turn(tmp_path: Path) -> None:
    """`join` gives a start its timeout, but not a turn at the gate: a lab of 30 joins at
    once must not print errors for nodes that are only waiting (then time the start)."""
    import os
    import time

    from lanray_tui.core import lifecycle
    from lanray_tui.core.errors import LanrayError
    from lanray_tui.core.paths import Paths, ensure_private_dir
    from tests.helpers.agent_stub import AGENT, AgentStub

    paths = Paths.from_env()
    ensure_private_dir(paths.runtime_dir)
    t0 = time.monotonic()
    script = [  # (seconds since start, state, detail)
        (0.0, "starting", waiting_line(2)),
        (1.0, "starting", waiting_line(1)),
        (1.6, "starting", "starting Ray"),
        (1.9, "ready", ""),
    ]
    said: list[str] = []

    def answer(req: dict[str, object]) -> bytes:
        from lanray_tui.core import protocol as p

        now = time.monotonic() - t0
        _, state, detail = [s for s in script if s[0] <= now][-1]
        info = {**AGENT.to_json(), "role": "worker", "state": state, "detail": detail}
        return p.encode({"ok": True, "result": info})

    stub = AgentStub(paths.socket, answer)
    try:
        got = lifecycle.wait_ready(paths, os.getpid(), 0.8, said.append)  # a 0.8 s timeout
        assert got.state == "ready" and time.monotonic() - t0 >= 1.9
        assert waiting_line(2) in said and waiting_line(1) in said
        script[:] = [(0.0, "starting", "starting Ray")]  # a start, not a turn: it times out
        with pytest.raises(LanrayError, match="was not ready after 0 s"):
            lifecycle.wait_ready(paths, os.getpid(), 0.3)
    finally:
        stub.close()
