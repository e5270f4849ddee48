"""The host's storage area for the cluster: ``data_dir/storage`` served over WebDAV with TLS.

Only a client with a certificate of the cluster's CA gets past the TLS handshake (the same
server context as the cluster API). Jobs get its address and their own folder in their
environment (:meth:`.job_service_runner.JobRunner.runtime_env`); ``lanray-tui results``
copies a job's folder home from any node. Job folders outlive their jobs; above
``storage.max_gb`` the oldest are removed first, with a warning in the agent log.

The server runs in threads of its own (cheroot), started and stopped from the agent's loop.
If it cannot start, the host goes on without it and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .storage_layout import GB, base_uri, job_folders, over_cap

if TYPE_CHECKING:
    from ..adapters.webdav_server import DavServer
    from .agent.host_services import HostServices
    from .cluster_ca import NodeTls

log = logging.getLogger("lanray.agent")

CAP_EVERY_S = 30.0


class StorageArea:
    """The folder, its server and its cap."""

    def __init__(self, root: Path, tls: NodeTls, ip: str, port: int, max_gb: float) -> None:
        self.root = root
        self.tls = tls
        self.ip = ip
        self.port = port
        self.cap_bytes = int(max_gb * GB)
        self.server: DavServer | None = None
        self.keep: frozenset[str] = frozenset()  # folders of jobs running now: never capped

    @property
    def uri(self) -> str:
        return base_uri(self.ip, self.port)

    def start(self) -> None:
        """Serve (raises OSError, ssl.SSLError or ImportError when it cannot)."""
        from ..adapters.webdav_server import DavServer

        (self.root / "jobs").mkdir(mode=0o700, parents=True, exist_ok=True)
        self.server = DavServer(
            self.root,
            self.ip,
            self.port,
            cert=self.tls.cert,
            key=self.tls.key,
            context=self.tls.server_context(),
            sizes=self.sizes,
        )
        self.server.start()
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def sizes(self) -> dict[str, Any]:
        """Bytes in each job folder (what ``jobs --json`` shows)."""
        return {"jobs": {f.name: f.size for f in job_folders(self.root)}}

    def enforce_cap(self) -> list[str]:
        """Remove the oldest job folders until the rest fit under the cap; their names."""
        removed = over_cap(job_folders(self.root), self.cap_bytes, self.keep)
        for name in removed:
            shutil.rmtree(self.root / "jobs" / name, ignore_errors=True)
            log.warning(
                "storage: removed the results of job %s (the job folders were over "
                "storage.max_gb = %g)",
                name,
                self.cap_bytes / GB,
            )
        return removed


async def start_for_host(host: HostServices) -> StorageArea | None:
    """Start the host's storage and hand its address to the job runner; None (with the
    reason in the node's detail and the log) when it cannot start."""
    from .cluster_ca import NodeTls

    cfg = host.cfg
    area = StorageArea(
        host.data_dir / "storage",
        NodeTls(host.data_dir / "tls"),  # Paths.tls_dir
        host.node.node_ip,
        int(cfg["storage.port"]),
        float(cfg["storage.max_gb"]),
    )
    try:
        await asyncio.to_thread(area.start)
    except (OSError, ssl.SSLError, ImportError) as exc:
        log.error("cluster storage is not available: %s", exc)
        host.node.detail = f"storage not available: {exc}"
        return None
    log.info("cluster storage at %s (%s)", area.uri, area.root)
    if host.jobs is not None:
        host.jobs.runner.storage = area.uri
    return area


async def keep_under_cap(area: StorageArea, host: HostServices) -> None:
    """Every so often, the cap (never a running job's folder)."""
    while not host.node.stopping.is_set():
        if host.jobs is not None:
            area.keep = frozenset(j.id for j in host.jobs.queue.active())
        with contextlib.suppress(OSError):
            await asyncio.to_thread(area.enforce_cap)
        await host.clock.sleep(CAP_EVERY_S)
