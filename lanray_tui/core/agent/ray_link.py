"""The agent's view of its cluster's Ray: nodes, usage, running tasks and drain.

One small facade over the dashboard and ``ray`` adapters, built on the node's current
credentials, so that the parts take one object they can be given a fake of in unit tests.

The dashboard listens on the head's loopback only
(:attr:`~..credentials.Credentials.dashboard_url`): where none answers (a worker, or the head
before its dashboard is up), the node list comes from the head's GCS over Ray's mutual-TLS
gRPC, in a child process. Draining speaks to the GCS the same way, through a child kept
with Ray loaded (:class:`~...adapters.ray_gcs.GcsSession`, started by :meth:`RayLink.warm`
while the node is lent), so that a drain takes milliseconds when the owner comes back;
``ray drain-node`` is the fallback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ...adapters import ray_dashboard, ray_gcs, ray_process
from .. import ray_tls
from ..credentials import Credentials
from ..errors import LanrayError
from ..models import NodeInfo
from ..paths import Paths

log = logging.getLogger("lanray.agent")


class RayView(Protocol):
    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]: ...

    def usage(self) -> dict[str, tuple[float, float]]: ...

    def running_tasks(self, node_id: str) -> int: ...

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool: ...

    def warm(self) -> None: ...


class RayLink:
    """Blocking calls: the parts run them in threads."""

    def __init__(self, creds: Callable[[], Credentials], tls_dir: Path | None = None) -> None:
        self._creds = creds
        # the agent passes its Paths' (the config may move paths.data_dir)
        self._tls_dir = tls_dir or Paths.from_env().tls_dir
        self._gcs: ray_gcs.GcsSession | None = None
        self._gcs_for: tuple[str, str] = ("", "")
        self._gcs_lock = threading.Lock()

    def _session(self) -> ray_gcs.GcsSession:
        """The kept GCS child for the current credentials (a new one if they changed)."""
        c = self._creds()
        with self._gcs_lock:
            if self._gcs is None or self._gcs_for != (c.gcs_address, c.token):
                if self._gcs is not None:
                    self._gcs.close()
                tls = ray_tls.ray_env(self._tls_dir)
                self._gcs = ray_gcs.GcsSession.for_cluster(c.gcs_address, c.token, tls)
                self._gcs_for = (c.gcs_address, c.token)
            return self._gcs

    def warm(self) -> None:
        """Start the kept GCS child now (it loads Ray), so a drain later is immediate."""
        self._session().start()

    def close(self) -> None:
        with self._gcs_lock:
            if self._gcs is not None:
                self._gcs.close()
                self._gcs = None

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
        try:
            return self._session().drain(node_id, deadline_s, reason)
        except LanrayError as exc:
            log.warning("draining through the GCS helper failed (%s): using 'ray drain-node'", exc)
        c = self._creds()
        tls = ray_tls.ray_env(self._tls_dir)
        return ray_process.drain(c.gcs_address, node_id, c.token, tls, deadline_s, reason)
