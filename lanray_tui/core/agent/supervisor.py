"""Ray supervision: start this node's Ray, wait until the head lists it, restart it when it
dies, and stop it while the machine is withheld.

Ray runs as ``ray start --block`` (or a container) so that its exit is seen at once. A start
that fails for a cause that cannot pass ends the agent with the reason; any other is retried
with jittered backoff (:mod:`.start_policy`). Once Ray was ready, a crash is retried with
backoff (:data:`RESTART_BACKOFF_S`), and a kick restarts it at once. A joined node asks the
host's start gate (:mod:`.start_gate`) before each start, so that a lab switched on at once
starts a few nodes at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from ...adapters import ray_process
from ...adapters.ray_process import RayHandle
from ..errors import LanrayError
from ..logfiles import contains, tail
from ..models import NodeInfo
from .ray_link import RayView
from .start_gate import waiting_line
from .start_policy import StartRetry, is_permanent
from .state import AgentState, Clock, NodeState

log = logging.getLogger("lanray.agent")

READY_POLL_S = 0.05
EARLY_POLL_S = 0.25  # how often the head is asked before Ray says it started
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)
ADMIT_POLL_S = 1.0  # how often a node waiting for the host's go asks again

#: Starts Ray (blocking; run in a thread). The argument reports the runtime's progress.
StartRay = Callable[[Callable[[str], None]], RayHandle]
#: Asks the host's start gate: (go now, how many nodes start first).
Admit = Callable[[], Awaitable[tuple[bool, int]]]


class RaySupervisor:
    def __init__(
        self,
        node: NodeState,
        clock: Clock,
        start: StartRay,
        ray: RayView,
        ray_log: Path,
        start_timeout_s: float,
        on_started: Callable[[RayHandle], None] = lambda _ray: None,
        retry: StartRetry | None = None,
        admit: Admit | None = None,
    ) -> None:
        self.node = node
        self.clock = clock
        self.start = start
        self.ray_view = ray
        self.ray_log = ray_log
        self.start_timeout_s = start_timeout_s
        self.on_started = on_started
        self.ray: RayHandle | None = None
        self.ever_ready = False
        self.restarts = 0
        self.retry = retry or StartRetry()
        self.admit = admit
        self._retried = False
        self._earlier: frozenset[str] | None = None  # see _earlier_nodes
        self.node_id = ""  # this node's Ray node id, once the head lists it (per start)

    # ----- what other parts ask -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.ray is not None and self.ray.poll() is None

    @property
    def pid(self) -> int | None:
        return self.ray.pid if self.ray is not None else None

    def stop_ray(self) -> None:
        """Stop Ray if it runs (blocking)."""
        if self.ray is not None and self.ray.poll() is None:
            log.info("stopping Ray (pid %d)", self.ray.pid)
            self.ray.stop()

    def is_me(self, n: NodeInfo) -> bool:
        return (
            n.state == "ALIVE"
            and n.ip == self.node.node_ip
            and (n.role == "head") == self.node.is_host
        )

    def my_node_id(self, timeout: float = 5.0) -> str:
        """This node's ALIVE Ray node id, or "" (blocking). The id seen when this Ray got
        ready is kept: a drain asks nothing of the head before it starts."""
        if self.node_id and self.running:
            return self.node_id
        return next((n.node_id for n in self.ray_view.nodes(timeout) if self.is_me(n)), "")

    async def listed(self, timeout: float = 3.0, not_in: frozenset[str] = frozenset()) -> bool:
        """True if the head lists this node ALIVE now; with ``not_in``, only a Ray node of
        this machine other than those (the one just spawned, not an earlier one that the
        head has not marked DEAD yet)."""
        try:
            nodes = await asyncio.to_thread(self.ray_view.nodes, timeout)
        except LanrayError:
            return False
        me = next((n for n in nodes if self.is_me(n) and n.node_id not in not_in), None)
        if me is not None:
            self.node_id = me.node_id
        return me is not None

    async def _earlier_nodes(self) -> frozenset[str] | None:
        """The Ray nodes of this machine the head knows before a worker's start (None: cannot
        tell). Not on the host: until its dashboard is up, each look at the node list loads
        Ray in a child process, which would slow the very start it waits for."""
        if self.node.is_host:
            return None
        try:
            nodes = await asyncio.to_thread(self.ray_view.nodes, 2.0)
        except LanrayError:
            return None
        return frozenset(n.node_id for n in nodes if n.ip == self.node.node_ip)

    async def restart_now(self, why: str) -> None:
        """Restart Ray at once (no backoff): the supervisor starts it again after it stops."""
        self.node.detail = why
        self.node.kick.set()
        await asyncio.to_thread(self.stop_ray)

    async def rejoin_if_lost(self) -> None:
        """After a cut link, Ray's worker is often already dead for the head (or will abort
        soon): if the head does not list it ALIVE, restart it now."""
        if not self.node.lent.is_set():
            return
        if self.node.state is not AgentState.READY or not await self.listed():
            log.warning("rejoining: restarting the Ray worker")
            await self.restart_now("link came back")

    # ----- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        node = self.node
        while not node.stopping.is_set():
            if not node.lent.is_set():
                node.state, node.detail = AgentState.PAUSED, node.lending["reason"]
                await self.clock.wait_any([node.lent, node.stopping])
                continue
            if not await self._run_once():
                return
            if node.stopping.is_set():
                return
            if not self._retried:
                await self._after_exit()

    async def _run_once(self) -> bool:
        """Start Ray and follow it until it exits; False when the agent must stop."""
        node = self.node
        node.kick.clear()
        self.node_id = ""
        self._retried = False  # a failed start waits its backoff in _start_failed
        if not await self._wait_turn():
            self._retried = True  # nothing started: nothing to clean up after
            return not node.stopping.is_set()
        log_start = self.ray_log.stat().st_size if self.ray_log.exists() else 0
        self._earlier = await self._earlier_nodes()
        try:
            # in a thread: the docker runtime may pull an image for minutes, and the
            # control socket must answer meanwhile (the detail shows the pull's progress)
            ray = await asyncio.to_thread(self.start, self._progress)
        except LanrayError as exc:
            return await self._start_failed(str(exc))
        self.ray = ray
        self.on_started(ray)
        log.info("started Ray (pid %d)", ray.pid)
        if await self._wait_ready(log_start):
            self.ever_ready = True
            self.restarts = 0
            self.retry.reset()
            node.state, node.detail = AgentState.READY, ""
            node.beat_now.set()
            log.info("Ray is ready")
            rc = await asyncio.to_thread(ray.wait)
            if node.stopping.is_set():
                return False
            why = tail(self.ray_log, 1, log_start)
            node.detail = f"Ray exited with code {rc}" + (f": {why}" if why else "")
        elif node.stopping.is_set():
            return False
        if not self.ever_ready and node.lent.is_set() and not node.kick.is_set():
            await asyncio.to_thread(self.stop_ray)
            return await self._start_failed(node.detail)
        return True

    async def _wait_turn(self) -> bool:
        """Wait for the host's go (a joined node); False if the agent stops or the machine
        is withheld meanwhile."""
        node = self.node
        if self.admit is None:
            return True
        while True:
            go, ahead = await self.admit()
            if go:
                return True
            if node.detail != (line := waiting_line(ahead)):
                log.info("%s", line)
            node.state, node.detail = AgentState.STARTING, line
            await self.clock.wait_any([node.stopping], timeout=ADMIT_POLL_S)
            if node.stopping.is_set() or not node.lent.is_set():
                return False

    async def _start_failed(self, detail: str) -> bool:
        """A start that never got ready: end the agent for a cause that will not pass, else
        retry after a jittered backoff (a join storm, a head that is not up yet)."""
        node = self.node
        if is_permanent(detail):
            log.error("Ray did not start: %s", detail)
            node.fail(detail)
            return False
        self._retried = True
        delay = self.retry.next_delay()
        node.state, node.detail = AgentState.RESTARTING, self.retry.line(detail, delay)
        log.warning("%s (%s)", node.detail, detail)
        await self.clock.wait_any([node.stopping, node.kick], timeout=delay)
        node.state = AgentState.STARTING
        return not node.stopping.is_set()

    async def _after_exit(self) -> None:
        node = self.node
        await asyncio.to_thread(self.stop_ray)
        if not node.lent.is_set():
            log.info("Ray stopped: %s", node.lending["reason"])
            return
        node.state = AgentState.RESTARTING
        if node.kick.is_set():
            self.restarts = 0
            log.warning("restarting Ray now: %s", node.detail)
            return
        delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
        self.restarts += 1
        log.warning("%s; restarting Ray in %.0f s", node.detail, delay)
        await self.clock.wait_any([node.stopping, node.kick], timeout=delay)

    def _progress(self, line: str) -> None:
        """What the runtime does while Ray starts (pulling an image...), for ``info``."""
        if self.node.state is AgentState.STARTING:
            self.node.detail = line

    async def _wait_ready(self, log_start: int) -> bool:
        """Wait for the head to list this node ALIVE: once Ray said it started, or, before
        that, a Ray node of this machine that started after this spawn. (``ray start`` says
        so only on its next check of the GCS, once a second: up to a second after the head
        lists the node.) A node of this machine counts before that only if the head did
        not know it before this start."""
        assert self.ray is not None
        node = self.node
        deadline = self.clock.monotonic() + self.start_timeout_s
        started = bool(getattr(self.ray, "adopted", False))  # it said so to the last agent
        early_at = self.clock.monotonic() + EARLY_POLL_S
        while self.clock.monotonic() < deadline and not node.stopping.is_set():
            if node.kick.is_set() or not node.lent.is_set():
                node.detail = "start abandoned"
                return False
            if self.ray.poll() is not None:
                why = tail(self.ray_log, 3, log_start) or "no output"
                node.detail = f"Ray exited with code {self.ray.returncode}: {why}"
                return False
            if not started:
                started = contains(self.ray_log, log_start, ray_process.STARTED_MARKER)
            if started and await self.listed(2.0):
                return True
            if not started and self._earlier is not None and self.clock.monotonic() >= early_at:
                early_at = self.clock.monotonic() + EARLY_POLL_S
                if await self.listed(2.0, not_in=self._earlier):
                    return True
            await self.clock.sleep(READY_POLL_S)
        if not node.stopping.is_set():
            node.detail = f"Ray was not ready after {self.start_timeout_s:g} s"
        return False
