"""Heartbeats and liveness.

A worker beats once per interval to the host's cluster API, carrying its state, lending and
resources. After ``missed`` unanswered beats its link is LOST; when beats come back it asks
the supervisor to rejoin at once instead of waiting for Ray's own (slow) failure detection.
The host keeps the beats in a :class:`~..cluster_api.HeartbeatBook` (served by
:meth:`HeartbeatReceiver.op_heartbeat`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..cluster_api import HeartbeatBook
from ..errors import LanrayError
from ..protocol import HeartbeatReply, HeartbeatRequest, StartReply, StartRequest
from .start_gate import StartGate
from .state import Clock, NodeState

log = logging.getLogger("lanray.agent")

#: Sends one beat; True when the host answered ok (never raises for a network failure).
SendBeat = Callable[[dict[str, Any], float], Awaitable[bool]]


class HeartbeatSender:
    def __init__(
        self,
        node: NodeState,
        clock: Clock,
        send: SendBeat,
        body: Callable[[], dict[str, Any]],
        on_back: Callable[[], Awaitable[None]],
        interval_s: float,
        missed: int,
    ) -> None:
        self.node = node
        self.clock = clock
        self.send = send
        self.body = body
        self.on_back = on_back
        self.interval_s = interval_s
        self.missed = missed
        self.failures = 0

    async def beat_once(self) -> None:
        ok = await self.send(self.body(), self.interval_s)
        if ok:
            if self.failures >= self.missed:
                log.warning("the host answers again after %d missed heartbeats", self.failures)
                await self.on_back()
            self.failures, self.node.link = 0, "UP"
            return
        self.failures += 1
        if self.failures == self.missed:
            log.warning("lost the host: %d heartbeats unanswered", self.failures)
            self.node.link = "LOST"

    async def run(self) -> None:
        while not self.node.stopping.is_set():
            started = self.clock.monotonic()
            self.node.beat_now.clear()
            await self.beat_once()
            left = max(0.0, self.interval_s - (self.clock.monotonic() - started))
            await self.clock.wait_any([self.node.beat_now, self.node.stopping], timeout=left)


class HeartbeatReceiver:
    """The host's side: the ``heartbeat`` op records each worker's beat, and the ``start``
    op lets a few workers start Ray at a time (:class:`~.start_gate.StartGate`)."""

    def __init__(
        self,
        node: NodeState,
        book: HeartbeatBook,
        gate: StartGate,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.node = node
        self.book = book
        self.gate = gate
        self.on_change = on_change  # a worker came, or its state or lending state moved

    async def op_heartbeat(self, req: HeartbeatRequest | dict[str, Any]) -> HeartbeatReply:
        if not self.node.is_host:
            raise LanrayError("heartbeats go to the host")
        if not isinstance(req, HeartbeatRequest):
            req = HeartbeatRequest.from_json({**req, "op": HeartbeatRequest.OP})
        last = self.book.beats.get(req.node_ip)
        self.book.record(req)
        self.gate.beat(req.node_ip, req.state)
        # what moves Ray's node list: a worker's Ray starting or stopping (its reasons and
        # figures come from the beats themselves, fresh on every status)
        if last is None or (last.state, last.lending.get("state")) != (
            req.state,
            req.lending.get("state"),
        ):
            self.on_change()
        return HeartbeatReply()

    async def op_start(self, req: StartRequest | dict[str, Any]) -> StartReply:
        if not self.node.is_host:
            raise LanrayError("only the host lets nodes start")
        if not isinstance(req, StartRequest):
            req = StartRequest.from_json({**req, "op": StartRequest.OP})
        go, ahead = self.gate.ask(req.node_ip)
        if go:
            log.info("%s may start Ray (%d starting)", req.node_ip, self.gate.starting())
        return StartReply(go, ahead)
