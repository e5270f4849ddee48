"""The lending loop: sample this machine every second (for the nodes pane) and, on a joined
node with the policy on, lend it only while its owner is away; and the ops that withhold or
lend it by hand (pause, resume, stop_ray, restart_ray).

Withholding drains this node in Ray first (no new work; running tasks get the deadline,
what still runs then is retried elsewhere by Ray), then stops its Ray; the agent stays.

The owner's machine is theirs quickly: between the samples (one a second) the owner's input
is read four times a second, and a return starts the drain at once, through a GCS client
kept ready while the node is lent (:meth:`.ray_link.RayLink.warm`) and with the node id
known since Ray got ready. The drain ends as soon as no Ray worker of this node holds work
(read from the node's own processes, which also sees actors between calls), else at the
deadline; then Ray stops. Meanwhile the node says "owner back, draining (N s left)".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from ...adapters import system
from .. import protocol as p
from ..errors import LanrayError
from ..lending import Decision
from ..resources import InputIdle, Sample
from .ray_link import RayView
from .state import Clock, NodeState, StopCause
from .supervisor import RaySupervisor

log = logging.getLogger("lanray.agent")

DRAIN_POLL_S = 0.5
INPUT_POLL_S = 0.25  # the owner's input, between the samples
SAMPLE_S = 1.0
# The input reader says "idle since it started" on the wall clock, the loop counts its own
# time on the monotonic one: the two differ by a little (measured: 0.2 ms after 50 ms), and
# "idle a hair less than the agent's age" must not read as the owner at the keyboard.
CONSENT_SLACK_S = 1.0


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
        self._last: Sample | None = None
        self._warmed = ""  # the Ray node id the GCS helper was started for

    # ----- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self.node.stopping.is_set():
                await self.step()
                await self.watch_input(SAMPLE_S)
        finally:
            self.watcher.close()

    async def watch_input(self, period: float) -> None:
        """Until the next sample: read the owner's input every :data:`INPUT_POLL_S` while
        lending, and withhold at once when the owner is back."""
        left = period
        while left > 1e-9 and not self.node.stopping.is_set():
            pause = min(INPUT_POLL_S, left)
            await self.clock.sleep(pause)
            left -= pause
            if left > 1e-9 and self._watching():
                assert self._last is not None
                await self.decide(self._last)

    def _watching(self) -> bool:
        node = self.node
        return (
            self.policy_on
            and self._last is not None
            and node.manual == "auto"
            and node.lent.is_set()
            and not node.stopping.is_set()
        )

    async def step(self) -> None:
        self.sampler.ray_root_pid = self.supervisor.pid
        sample = await asyncio.to_thread(self.sampler.sample)
        self.sample = sample.to_json()
        self._last = sample
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
        await self.warm()
        await self.decide(sample)

    async def warm(self) -> None:
        """While lent, keep the GCS client that drains this node ready (once per Ray)."""
        node_id = self.supervisor.node_id
        if not node_id or node_id == self._warmed or not self.node.lent.is_set():
            return
        self._warmed = node_id
        try:
            await asyncio.to_thread(self.ray.warm)
        except LanrayError as exc:
            log.warning("cannot keep a GCS client ready for draining: %s", exc)

    async def decide(self, sample: Sample) -> None:
        """Read the owner's input, ask the policy, follow its decision."""
        idle = await asyncio.to_thread(self.watcher)
        since_start = self.clock.monotonic() - self.started_at
        if idle.seconds is not None and idle.seconds >= since_start - CONSENT_SLACK_S:
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
        """Drain (no new work; running tasks get ``deadline``), then stop the worker.

        No longer lent from the start: a raylet that is drained and idle ends by itself
        (Ray 2.60), and the supervisor must take that for the end, not restart it."""
        self.node.lending = {"state": state, "reason": reason}
        self.node.lent.clear()
        try:
            drained = await self.drain_and_wait(deadline, reason, state)
        finally:
            self.node.lending = {"state": state, "reason": reason}
        await asyncio.to_thread(self.supervisor.stop_ray)
        return drained

    async def drain_and_wait(self, deadline_s: int, reason: str, state: str = "") -> bool:
        """Drain this node in Ray, then wait until no Ray work runs on it or the deadline
        passes; meanwhile the lending reason counts down (for status and the host)."""
        try:
            node_id = await asyncio.to_thread(self.supervisor.my_node_id, 5.0)
        except LanrayError:
            return False
        if not node_id:
            return False
        # Ray's processes can be seen below ours (native Ray): once drained and idle, Ray
        # 2.60 ends the raylet by itself, and then nothing of Ray's is left here to wait for
        ours = await asyncio.to_thread(self.raylet_below_us)
        if not await asyncio.to_thread(self.ray.drain, node_id, deadline_s, reason):
            return False
        log.info("draining this node in Ray (deadline %d s): %s", deadline_s, reason)
        end = self.clock.monotonic() + deadline_s
        while self.clock.monotonic() < end and self.supervisor.running:
            if state:
                left = end - self.clock.monotonic()
                self.node.lending = {"state": state, "reason": draining(state, reason, left)}
            with contextlib.suppress(LanrayError):
                if await asyncio.to_thread(self.work_left, node_id, ours) == 0:
                    break
            await self.clock.sleep(DRAIN_POLL_S)
        return True

    def raylet_below_us(self) -> bool:
        """A raylet runs below this agent's Ray (blocking): its workers can be seen."""
        root = self.supervisor.pid
        return root is not None and system.ray_work(root) is not None

    def work_left(self, node_id: str, ours: bool = False) -> int:
        """How much Ray work this node still holds (blocking): its Ray workers with a task
        or an actor, read from its own processes. ``ours``: a raylet ran below this agent's
        Ray when the drain began; if it is gone, it ended itself (drained and idle), and
        nothing is left (the task list would still show its last tasks RUNNING for a
        while: a drain once waited its whole deadline on them). Where Ray's processes
        cannot be seen (Ray in a container), the tasks Ray lists as running on it."""
        root = self.supervisor.pid
        work = system.ray_work(root) if root is not None else None
        if work is not None:
            return len(work)
        if ours:
            return 0
        return self.ray.running_tasks(node_id)

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


def draining(state: str, reason: str, left_s: float) -> str:
    """The lending reason while the node drains: "owner back, draining (41 s left)"."""
    left = f"draining ({max(0, round(left_s))} s left)"
    return f"owner back, {left}" if state == "owner-active" else f"{reason}; {left}"


def make_policy_parts(cfg: Any) -> tuple[Sampler, InputReader, Policy]:
    """The real sampler, input reader and lending policy (imported only when the agent runs)."""
    from ...adapters import nvml
    from ..lending import Lender
    from ..lending import Policy as LendingPolicy
    from ..resources import InputWatcher
    from ..resources import Sampler as RealSampler

    sampler = RealSampler(gpus=nvml.default())
    return sampler, InputWatcher(), Lender(LendingPolicy.from_config(cfg))
