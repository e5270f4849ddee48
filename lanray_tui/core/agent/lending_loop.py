"""The lending loop: sample this machine every second (for the nodes pane) and, on a joined
node with the policy on, lend it only while its owner is away; and the ops that withhold or
lend it by hand (pause, resume, stop_ray, restart_ray).

Withholding drains this node in Ray first (no new work; running tasks get the deadline,
what still runs then is retried elsewhere by Ray), then stops its Ray; the agent stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from .. import protocol as p
from ..errors import LanrayError
from ..lending import Decision
from ..resources import InputIdle, Sample
from .ray_link import RayView
from .state import Clock, NodeState, StopCause
from .supervisor import RaySupervisor

log = logging.getLogger("lanray.agent")

DRAIN_POLL_S = 0.5


class Sampler(Protocol):
    ray_root_pid: int | None

    def sample(self) -> Sample: ...


class InputReader(Protocol):
    def __call__(self) -> InputIdle: ...

    def close(self) -> None: ...


class Policy(Protocol):
    def step(self, sample: Sample, idle: InputIdle, manual: str = "auto") -> Decision: ...


class LendingLoop:
    def __init__(
        self,
        node: NodeState,
        clock: Clock,
        supervisor: RaySupervisor,
        ray: RayView,
        sampler: Sampler,
        watcher: InputReader,
        policy: Policy,
        policy_on: bool,
        drain_deadline_s: int,
        started_at: float,
    ) -> None:
        self.node = node
        self.clock = clock
        self.supervisor = supervisor
        self.ray = ray
        self.sampler = sampler
        self.watcher = watcher
        self.policy = policy
        self.policy_on = policy_on
        self.drain_deadline_s = drain_deadline_s
        self.started_at = started_at
        self.sample: dict[str, Any] = {}

    # ----- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self.node.stopping.is_set():
                await self.step()
                await self.clock.sleep(1.0)
        finally:
            self.watcher.close()

    async def step(self) -> None:
        self.sampler.ray_root_pid = self.supervisor.pid
        sample = await asyncio.to_thread(self.sampler.sample)
        self.sample = sample.to_json()
        node = self.node
        if node.lend_until and self.clock.time() >= node.lend_until and not node.is_host:
            await self.end_lending()
            return
        if node.cluster_ends and self.clock.time() >= node.cluster_ends and node.is_host:
            log.info("the cluster's time is up (host --expires): ending it; the queue stays")
            node.detail = "the cluster's time is up"
            node.stop(StopCause.LEAVE)
            return
        if not self.policy_on:
            return
        idle = await asyncio.to_thread(self.watcher)
        if idle.seconds is not None and idle.seconds >= self.clock.monotonic() - self.started_at:
            # no input since lanray-tui was started by hand: that is consent
            idle = InputIdle(None, "", "no owner input since lanray-tui started")
        decision = self.policy.step(sample, idle, self.node.manual)
        if self.node.manual == "auto":
            await self.follow(decision.state, decision.reason)

    async def follow(self, state: str, reason: str) -> None:
        node = self.node
        lending_now = node.lent.is_set()
        if state == "lending" and not lending_now:
            log.info("lending again: %s", reason)
            node.lending = {"state": "lending", "reason": reason}
            node.lent.set()
        elif state != "lending" and lending_now:
            log.info("withholding this machine: %s", reason)
            await self.withhold(state, reason, self.drain_deadline_s)
        elif state != "lending":
            node.lending = {"state": state, "reason": reason}

    async def end_lending(self) -> None:
        """The time the owner lent this machine for is up: drain as when the owner comes
        back, then leave the cluster (the credentials stay: 'join' lends it again)."""
        from ..lend_time import describe

        ended = describe(self.node.lend_until)
        log.info("the lending time is up (%s): draining, then leaving", ended)
        self.node.lend_until = 0.0
        self.node.manual = "paused"
        await self.withhold("lending-ended", f"lent {ended}: the time is up", self.drain_deadline_s)
        self.node.detail = f"lent {ended}: the time is up"
        self.node.stop(StopCause.LEAVE)

    async def op_lend(self, req: p.LendRequest) -> p.LendingReply:
        """Set (``until``, a Unix time) or clear (0) when this joined machine stops lending."""
        if self.node.is_host:
            raise LanrayError("the host lends until it leaves: 'lend --until' is for joined nodes")
        if req.until and req.until <= self.clock.time():
            raise LanrayError("that time has passed")
        self.node.lend_until = float(req.until or 0.0)
        view = self.node.lending_view()
        return p.LendingReply(view.get("state", "lending"), until=view.get("until", ""))

    async def withhold(self, state: str, reason: str, deadline: int) -> bool:
        """Drain (no new work; running tasks get ``deadline``), then stop the worker."""
        self.node.lending = {"state": state, "reason": reason}
        drained = await self.drain_and_wait(deadline, reason)
        self.node.lent.clear()
        await asyncio.to_thread(self.supervisor.stop_ray)
        return drained

    async def drain_and_wait(self, deadline_s: int, reason: str) -> bool:
        """Drain this node in Ray, then wait until no task runs on it or the deadline passes."""
        try:
            node_id = await asyncio.to_thread(self.supervisor.my_node_id, 5.0)
        except LanrayError:
            return False
        if not node_id:
            return False
        if not await asyncio.to_thread(self.ray.drain, node_id, deadline_s, reason):
            return False
        end = self.clock.monotonic() + deadline_s
        while self.clock.monotonic() < end and self.supervisor.running:
            with contextlib.suppress(LanrayError):
                if await asyncio.to_thread(self.ray.running_tasks, node_id) == 0:
                    break
            await self.clock.sleep(DRAIN_POLL_S)
        return True

    # ----- ops ----------------------------------------------------------------------------

    def _deadline(self, given: int | None) -> int:
        return self.drain_deadline_s if given is None else given

    async def op_pause(self, req: p.PauseRequest) -> p.LendingReply:
        """Withhold this machine: drain Ray, then stop the worker. ``resume`` lends it again."""
        if self.node.is_host:
            raise LanrayError("pausing the host is not available yet: only joined nodes pause")
        if not self.node.lent.is_set():
            return p.LendingReply("paused", False)
        reason = req.reason or "paused by hand"
        deadline = self._deadline(req.deadline_s)
        self.node.manual = "paused"
        drained = await self.withhold("paused", reason, deadline)
        return p.LendingReply("paused", drained)

    async def op_resume(self, req: p.ResumeRequest) -> p.LendingReply:
        if self.node.is_host and self.node.lent.is_set():
            raise LanrayError("only joined nodes pause and resume")
        self.node.manual = "auto"
        self.node.lending = {"state": "lending", "reason": "resumed by hand"}
        self.node.lent.set()
        return p.LendingReply("lending")

    async def op_stop_ray(self, req: p.StopRayRequest) -> p.LendingReply:
        """Stop this node's Ray (its container, under docker) and keep the agent until
        ``resume``. A joined node drains first, as on ``pause``; on the host the head goes
        down, and with it the cluster (queued jobs wait in the queue)."""
        node = self.node
        if not node.lent.is_set():
            return p.LendingReply(node.lending.get("state", "stopped"), False)
        node.manual = "paused"
        if not node.is_host:
            deadline = self._deadline(req.deadline_s)
            drained = await self.withhold("stopped", "stopped by hand", deadline)
            return p.LendingReply("stopped", drained)
        log.info("stopping the head by hand")
        node.lending = {"state": "stopped", "reason": "stopped by hand"}
        node.lent.clear()
        await asyncio.to_thread(self.supervisor.stop_ray)
        return p.LendingReply("stopped", False)

    async def op_restart_ray(self, req: p.RestartRayRequest) -> p.LendingReply:
        """Restart this node's Ray now (under docker: a fresh container)."""
        if not self.node.lent.is_set():
            raise LanrayError(
                f"Ray is stopped on this node ({self.node.lending.get('reason', '')}): "
                "start it first ('lanray-tui resume')"
            )
        log.info("restarting Ray by hand")
        await self.supervisor.restart_now("restarted by hand")
        return p.LendingReply("restarting")


def make_policy_parts(cfg: Any) -> tuple[Sampler, InputReader, Policy]:
    """The real sampler, input reader and lending policy (imported only when the agent runs)."""
    from ...adapters import nvml
    from ..lending import Lender
    from ..lending import Policy as LendingPolicy
    from ..resources import InputWatcher
    from ..resources import Sampler as RealSampler

    sampler = RealSampler(gpus=nvml.default())
    return sampler, InputWatcher(), Lender(LendingPolicy.from_config(cfg))
