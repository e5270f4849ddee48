"""The host's last look at Ray's node list, so that ``status`` need not ask Ray each time.

Every node-list fetch the host makes (the summary every few seconds, a worker waiting to
be listed, a status) goes through :class:`RecentNodes`, which keeps the newest answer. A
``status`` takes that answer while it is young and nothing has happened since it was
fetched; what counts as happening is told by :meth:`RecentNodes.changed` (a worker's beat
with a new state or lending, a node taking a start slot). Otherwise it asks Ray, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..models import NodeInfo
from .ray_link import RayView

MAX_AGE_S = 2.5  # a little over the summary's period, so a status between two stays cached


class RecentNodes:
    """A :class:`~.ray_link.RayView` (blocking, like the one it wraps) that keeps the
    newest node list it fetched, and when it fetched it."""

    def __init__(
        self,
        view: RayView,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()  # the fetches run in worker threads
        self._nodes: list[NodeInfo] | None = None
        self._fetched_at = 0.0  # when the kept list's fetch began
        self._changes = 0  # how many changes were told
        self._kept_after = -1  # how many had been told when the kept list's fetch began

    def changed(self) -> None:
        """Something that may change the node list happened: the kept one is stale."""
        with self._lock:
            self._changes += 1

    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        """Ray's node list now (a fetch), kept for :meth:`recent`."""
        with self._lock:
            began, changes = self.clock(), self._changes
        got = self.view.nodes(timeout)
        with self._lock:
            if began >= self._fetched_at:
                self._nodes, self._fetched_at, self._kept_after = got, began, changes
        return got

    def recent(self, timeout: float = 5.0) -> list[NodeInfo]:
        """The kept list if it is young and nothing changed since its fetch began, else a
        fetch."""
        with self._lock:
            now, nodes = self.clock(), self._nodes
            young = now - self._fetched_at <= self.max_age_s
            if nodes is not None and young and self._kept_after == self._changes:
                return list(nodes)
        return self.nodes(timeout)

    def usage(self) -> dict[str, tuple[float, float]]:
        return self.view.usage()

    def running_tasks(self, node_id: str) -> int:
        return self.view.running_tasks(node_id)

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool:
        return self.view.drain(node_id, deadline_s, reason)

    def warm(self) -> None:
        self.view.warm()
