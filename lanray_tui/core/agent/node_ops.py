"""The ops every node answers about itself: ``info``, ``status`` (with the host's view of
every node's link and lending), ``logs`` (a stream of this node's Ray or agent log) and
``leave``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ... import __version__
from ...adapters import ray_process
from .. import protocol as p
from ..cluster_api import HeartbeatBook
from ..errors import LanrayError
from ..models import AgentInfo, NodeInfo
from .ray_link import RayView
from .state import AgentState, NodeState, StopCause

LOG_SOURCES = ("ray", "agent")
LOG_POLL_S = 0.2

#: Asks the host's cluster API for its status view (a worker); None when it can't.
AskHost = Callable[[], Awaitable[p.StatusReply | None]]


class NodeOps:
    def __init__(
        self,
        node: NodeState,
        ray: RayView,
        logs: dict[str, Path],
        runtime_view: Callable[[], dict[str, Any]],
        sample: Callable[[], dict[str, Any]],
        free: Callable[[], dict[str, float] | None],
        book: HeartbeatBook,
        ask_host: AskHost | None = None,
        pairing: Callable[[], dict[str, Any]] = dict,
        recent_nodes: Callable[[], list[NodeInfo]] | None = None,
        guard: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.node = node
        self.ray = ray
        self.logs = logs
        self.runtime_view = runtime_view
        self.sample = sample
        self.free = free
        self.book = book
        self.ask_host = ask_host
        self.pairing = pairing
        # the host's last node list while young (RecentNodes.recent); else ask Ray each time
        self.recent_nodes = recent_nodes
        self.guard = guard  # the guard on this node's Ray HTTP ports (guard.GuardView's JSON)

    def info(self) -> AgentInfo:
        n, c = self.node, self.node.creds
        return AgentInfo(
            pid=os.getpid(),
            version=__version__,
            role=n.role.value,
            state=n.state.value,
            detail=n.detail,
            cluster_name=c.cluster_name,
            cluster_id=c.cluster_id,
            head_address=c.gcs_address,
            node_ip=n.node_ip,
            dashboard_url=c.dashboard_url,
            ray_version=ray_process.ray_version(),
            link=n.link,
            lending=n.lending_view(),
            guard=self.guard(),
        )

    async def op_info(self, req: p.InfoRequest) -> AgentInfo:
        if self.node.state is AgentState.FAILED:
            self.node.failure_told.set()
        return self.info()

    async def op_status(self, req: p.StatusRequest) -> p.StatusReply:
        if self.ask_host is not None:
            # the host knows the links and lending of every node: ask it, else Ray alone
            host = await self.ask_host()
            if host is not None:
                return replace(host, agent=self.info())
        note = ""
        try:
            nodes = await asyncio.to_thread(self.recent_nodes or self.ray.nodes)
        except LanrayError as exc:  # Ray restarting, or stopped: the agent still answers
            nodes, note = [], f"Ray's view of the nodes is not available: {exc}"
        return p.StatusReply(
            nodes=[self.node_view(n, earlier) for n, earlier in fold(nodes)],
            agent=self.info(),
            free=self.free() if self.node.is_host else None,
            pairing=self.pairing() if self.node.is_host else None,
            note=note,
            ends_at=self.node.cluster_ends,
        )

    def node_view(self, n: NodeInfo, earlier: int = 0) -> dict[str, Any]:
        """A machine's row: its current Ray node plus what the heartbeats say (its link,
        lending state and resources). A node its owner withholds is WITHHELD with the
        reason, not DEAD: its Ray is stopped on purpose and its agent still beats."""
        view = n.to_json()
        if n.role == "head":
            link, age = ("UP" if self.node.is_host else "n/a"), None
            lending, resources = self.node.lending, self.sample()
            rt = self.runtime_view() if self.node.is_host else {}
        else:
            link, age = self.book.link(n.ip)
            beat = self.book.beats.get(n.ip)
            lending = beat.lending if beat else {}
            resources = beat.resources if beat else {}
            rt = beat.runtime if beat else {}
            if n.state == "DEAD" and link == "UP" and beat is not None:
                if lending.get("state", "lending") != "lending":
                    view["state"] = "WITHHELD"
                elif beat.state in ("starting", "restarting"):
                    view["state"] = "RESTARTING"
        if view["state"] == "DEAD":
            link, age, lending, rt = "n/a", None, {}, {}
        view.update(
            link=link,
            last_heartbeat_s=age,
            lending=lending,
            resources=resources,
            runtime=rt,
            ray_restarts=earlier,
        )
        return view

    async def op_leave(self, req: p.LeaveRequest) -> p.LeaveReply:
        self.node.stop(StopCause.LEAVE)
        return p.LeaveReply(pid=os.getpid())

    async def stream_logs(self, req: p.LogsRequest, writer: asyncio.StreamWriter) -> None:
        """Stream a log of this node: ``{"ok": true, "result": {"line": ...}}`` per line.

        ``source`` is ``ray`` (what Ray printed) or ``agent``; ``lines`` says how many old
        lines to send first; with ``follow`` new lines keep coming until the client goes.
        """
        if req.source not in self.logs:
            raise LanrayError(f"no log source '{req.source}'")
        path, follow, backlog = self.logs[req.source], req.follow, req.lines

        def send(raw: bytes) -> None:
            writer.write(p.ok_line(p.LogLine(raw.decode(errors="replace"))))

        pos = 0
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            pos = len(data)
            for raw in data.splitlines()[-backlog:] if backlog > 0 else []:
                send(raw)
        await writer.drain()
        partial = b""
        while follow and not self.node.stopping.is_set():
            await asyncio.sleep(LOG_POLL_S)
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except OSError:
                continue
            pos += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            for raw in lines:
                send(raw)
            await writer.drain()  # raises ConnectionError when the client went away
        writer.write(p.END_LINE)


def fold(nodes: list[NodeInfo]) -> list[tuple[NodeInfo, int]]:
    """One row per machine (address and role): its ALIVE Ray node, else its last listed one,
    with how many earlier Ray nodes (restarts, rejoins) it had."""
    groups: dict[tuple[str, str], list[NodeInfo]] = {}
    for n in nodes:
        groups.setdefault((n.ip, n.role), []).append(n)
    rows = []
    for group in groups.values():
        alive = [n for n in group if n.state == "ALIVE"]
        rows.append(((alive or group)[-1], len(group) - 1))
    return rows


def host_only(what: str) -> Callable[[Any], Awaitable[Any]]:
    """An op a worker refuses with one line (``token``, ``code``)."""

    async def refuse(req: Any) -> Any:
        raise LanrayError(what)

    return refuse
