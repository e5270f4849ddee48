"""Plain data that crosses the control socket and feeds both faces (CLI and TUI).

:class:`NodeInfo` lives in :mod:`.types` (the dashboard adapter builds it, and adapters may
import only that leaf module); it is re-exported here with ``GIB``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .types import GIB, NodeInfo

__all__ = ["GIB", "AgentInfo", "NodeInfo"]


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AgentInfo:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
