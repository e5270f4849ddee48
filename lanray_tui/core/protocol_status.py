"""The ``status`` op's request and reply, in a module of their own: ``lanray-tui status``
(which scripts and the TUI ask every few seconds) loads these two classes, not the whole
protocol. :mod:`.protocol` registers them with the others and re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import AgentInfo, NodeInfo, node_from_status
from .protocol_checks import Request


@dataclass(frozen=True)
class StatusReply:
    """The nodes (as the agent serves them: Ray's row plus heartbeats), this agent, and what
    Ray has not handed out (the host's summary, or None)."""

    nodes: list[dict[str, Any]]
    agent: AgentInfo
    free: dict[str, float] | None = None
    pairing: dict[str, Any] | None = None  # the host's CodeReply JSON (failed attempts...)
    note: str = ""  # why ``nodes`` is empty: Ray's view is not available (Ray restarting...)
    ends_at: float = 0.0  # when the host ends the cluster (Unix time; 0: never)

    def node_infos(self) -> list[NodeInfo]:
        return [node_from_status(n) for n in self.nodes]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nodes": self.nodes, "agent": self.agent.to_json()}
        out["free"] = self.free
        if self.pairing is not None:
            out["pairing"] = self.pairing
        if self.note:
            out["note"] = self.note
        if self.ends_at:
            out["ends_at"] = self.ends_at
        return out

    @classmethod
    def from_json(cls, d: Any) -> StatusReply:
        nodes = d["nodes"]
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise TypeError("nodes")
        free, pairing = d.get("free"), d.get("pairing")
        return cls(
            list(nodes),
            AgentInfo.from_json(d["agent"]),
            free if _is_obj(free) else None,
            pairing if _is_obj(pairing) else None,
            str(d.get("note") or ""),
            float(d.get("ends_at") or 0.0),
        )


@dataclass(frozen=True)
class StatusRequest(Request[StatusReply]):
    """The cluster's nodes with their links, lending and resources."""

    OP = "status"
    REPLY = StatusReply


def _is_obj(value: Any) -> bool:
    return isinstance(value, dict)
