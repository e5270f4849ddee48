"""The agent's view of its cluster's Ray: nodes, usage, running tasks and drain.

One small facade over the dashboard and ``ray`` adapters, built on the node's current
credentials, so that the parts take one object they can be given a fake of in unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ...adapters import ray_dashboard, ray_process
from ..credentials import Credentials
from ..models import NodeInfo


class RayView(Protocol):
    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]: ...

    def usage(self) -> dict[str, tuple[float, float]]: ...

    def running_tasks(self, node_id: str) -> int: ...

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool: ...


class RayLink:
    """Blocking calls: the parts run them in threads."""

    def __init__(self, creds: Callable[[], Credentials]) -> None:
        self._creds = creds

    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        c = self._creds()
        return ray_dashboard.list_nodes(c.dashboard_url, c.token, timeout)

    def usage(self) -> dict[str, tuple[float, float]]:
        c = self._creds()
        return ray_dashboard.resource_usage(c.dashboard_url, c.token)

    def running_tasks(self, node_id: str) -> int:
        c = self._creds()
        return ray_dashboard.running_tasks(c.dashboard_url, c.token, node_id)

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool:
        c = self._creds()
        return ray_process.drain(c.gcs_address, node_id, c.token, deadline_s, reason)
