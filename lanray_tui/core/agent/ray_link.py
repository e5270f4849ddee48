"""The agent's view of its cluster's Ray: nodes, usage, running tasks and drain.

One small facade over the dashboard and ``ray`` adapters, built on the node's current
credentials, so that the parts take one object they can be given a fake of in unit tests.

The dashboard listens on the head's loopback only
(:attr:`~..credentials.Credentials.dashboard_url`): where none answers (a worker, or the head
before its dashboard is up), the node list comes from the head's GCS over Ray's mutual-TLS
gRPC, in a child process. ``ray drain-node`` speaks to the GCS the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ...adapters import ray_dashboard, ray_gcs, ray_process
from .. import ray_tls
from ..credentials import Credentials
from ..models import NodeInfo
from ..paths import Paths


class RayView(Protocol):
    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]: ...

    def usage(self) -> dict[str, tuple[float, float]]: ...

    def running_tasks(self, node_id: str) -> int: ...

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool: ...


class RayLink:
    """Blocking calls: the parts run them in threads."""

    def __init__(self, creds: Callable[[], Credentials], tls_dir: Path | None = None) -> None:
        self._creds = creds
        # the agent passes its Paths' (the config may move paths.data_dir)
        self._tls_dir = tls_dir or Paths.from_env().tls_dir

    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        c = self._creds()
        try:
            return ray_dashboard.list_nodes(c.dashboard_url, c.token, timeout)
        except ray_dashboard.DashboardUnreachable:
            tls = ray_tls.ray_env(self._tls_dir)
            return ray_gcs.list_nodes(c.gcs_address, c.token, tls, timeout)

    def usage(self) -> dict[str, tuple[float, float]]:
        c = self._creds()
        return ray_dashboard.resource_usage(c.dashboard_url, c.token)

    def running_tasks(self, node_id: str) -> int:
        c = self._creds()
        return ray_dashboard.running_tasks(c.dashboard_url, c.token, node_id)

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool:
        c = self._creds()
        tls = ray_tls.ray_env(self._tls_dir)
        return ray_process.drain(c.gcs_address, node_id, c.token, tls, deadline_s, reason)
