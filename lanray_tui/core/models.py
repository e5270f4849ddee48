"""Plain data that crosses the control socket and feeds both faces (CLI and TUI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .resources import Sample

from .guard import GuardView
from .types import GIB, NodeInfo

#: The control protocol's version (see :mod:`.protocol`), sent in ``info``. 2: typed requests;
#: 3: no token in requests (the cluster API is mutual TLS). An agent that does not send it
#: speaks 1.
PROTOCOL_VERSION = 3

__all__ = ["GIB", "PROTOCOL_VERSION", "AgentInfo", "NodeInfo", "node_from_status", "read_sample"]


def node_from_status(d: dict[str, Any]) -> NodeInfo:
    """A row of ``status``: Ray's fields plus link, lending and resource figures."""
    sample = read_sample(d.get("resources"))
    rt = d.get("runtime") or {}
    runtime = str(rt.get("kind", ""))
    if rt.get("container_state"):
        runtime += f" {rt['container_state']}"
    cpu_pct = mem_pct = gpu_pct = gpu_mem_pct = None
    gpu_note = ""
    if sample is not None:
        cpu_pct = sample.cpu_percent
        if sample.memory_total:
            mem_pct = 100.0 * sample.memory_used / sample.memory_total
        utils = [g.utilization.value for g in sample.gpus if g.utilization.value is not None]
        gpu_pct = sum(utils) / len(utils) if utils else None
        used = [g.memory_used.value for g in sample.gpus if g.memory_used.value is not None]
        total = [g.memory_total.value for g in sample.gpus if g.memory_total.value is not None]
        if total and len(used) == len(total) and sum(total):
            gpu_mem_pct = 100.0 * sum(used) / sum(total)
        gpu_note = sample.gpus_reason
    return NodeInfo(
        **{k: d[k] for k in ("node_id", "ip", "name", "role", "state", "cpus", "gpus")},
        memory_gb=d["memory_gb"],
        link=str(d.get("link", "n/a")),
        lending=str((d.get("lending") or {}).get("state", "")),
        cpu_pct=cpu_pct,
        mem_pct=mem_pct,
        gpu_pct=gpu_pct,
        gpu_mem_pct=gpu_mem_pct,
        gpu_note=gpu_note,
        runtime=runtime,
        lending_reason=str((d.get("lending") or {}).get("reason", "")),
        lending_until=str((d.get("lending") or {}).get("until", "")),
        guard_warning=_guard_warning(rt.get("guard")),
        ray_restarts=int(d.get("ray_restarts") or 0),
        agent_mb=_mb(rt.get("agent_mb")),
        ray_mb=_mb(rt.get("ray_mb")),
        sample=sample,
    )


def _guard_warning(doc: Any) -> str:
    view = GuardView.from_json(doc)
    return view.warning() if view is not None else ""


def _mb(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_sample(doc: Any) -> Sample | None:
    """A node's resource sample as the agents send it (None before its first, or if it is
    not one: the node shows "n/a" rather than the view failing)."""
    if not isinstance(doc, dict) or not doc:
        return None
    from .resources import Sample  # psutil comes with it: not on the first frame's path

    try:
        return Sample.from_json(doc)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class AgentInfo:
    """This machine's agent, as ``status`` reports it."""

    pid: int
    version: str
    role: str  # "host" | "worker"
    state: str  # "starting" | "ready" | "restarting" | "failed" | "stopping"
    detail: str
    cluster_name: str
    cluster_id: str
    head_address: str
    node_ip: str
    dashboard_url: str
    ray_version: str
    link: str = "n/a"  # a worker's view of the host: "UP" | "LOST"
    lending: dict[str, str] = field(default_factory=dict)  # {"state", "reason"}
    guard: dict[str, Any] = field(default_factory=dict)  # this node's guard.GuardView JSON
    # The agent's protocol: an AgentInfo made here speaks this code's; one read from an
    # agent that does not say is 0 (older than the handshake).
    protocol: int = PROTOCOL_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AgentInfo:
        got = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        got.setdefault("protocol", 0)
        return cls(**got)
