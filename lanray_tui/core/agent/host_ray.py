"""A worker's view of its cluster's Ray: asked of the host over the cluster API.

The head's dashboard listens on the head's loopback only, so a worker's agent asks the host
agent (over mutual TLS) for the node list and the tasks running on a node. Draining goes to
the GCS directly, over Ray's own TLS, as on the host.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TypeVar

from .. import cluster_api
from .. import protocol as p
from ..errors import LanrayError
from ..models import NodeInfo
from .ray_link import RayView

T = TypeVar("T")


class HostRayView:
    """Blocking calls (the parts run them in threads), like :class:`.ray_link.RayLink`."""

    def __init__(
        self,
        host_api: Callable[[], tuple[str, int]],
        tls: Callable[[], ssl.SSLContext],
        local: RayView,
    ) -> None:
        self.host_api = host_api
        self.tls = tls
        self.local = local  # for drain, which needs no dashboard

    def _ask(self, req: p.Request[T], timeout: float) -> T:
        host, port = self.host_api()
        try:
            return cluster_api.ask_blocking(host, port, req, self.tls(), timeout)
        except (OSError, ValueError) as exc:
            raise LanrayError(f"cannot ask the host at {host}:{port}: {exc}") from None

    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        return self._ask(p.RayNodesRequest(), timeout).nodes

    def usage(self) -> dict[str, tuple[float, float]]:
        raise LanrayError("the cluster's usage is the host's to tell")

    def running_tasks(self, node_id: str) -> int:
        return self._ask(p.RunningTasksRequest(node_id=node_id), 10.0).count

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool:
        return self.local.drain(node_id, deadline_s, reason)

    def warm(self) -> None:
        self.local.warm()
