"""The host's services: the job queue, beacons and pairing, and the free-resource summary
the beacons carry. Each degrades on its own: without discovery the cluster still works by
address and token, without the queue Ray still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...adapters import ray_process
from .. import protocol as p
from .. import storage_server
from ..errors import LanrayError
from ..models import GIB
from .ray_link import RayView
from .state import AgentState, Clock, NodeState

if TYPE_CHECKING:
    from ..announcer import Announcer, PairingService
    from ..beacon import Beacon
    from ..config import Config
    from ..job_service import JobService
    from ..joincode import CodeBook
    from ..storage_server import StorageArea

log = logging.getLogger("lanray.agent")

Handler = Callable[[Any], Awaitable[Any]]
StreamHandler = Callable[[Any, asyncio.StreamWriter], Awaitable[None]]

SUMMARY_EVERY_S = 2.0


class HostServices:
    def __init__(
        self, node: NodeState, cfg: Config, clock: Clock, ray: RayView, data_dir: Path
    ) -> None:
        self.node = node
        self.cfg = cfg
        self.clock = clock
        self.ray = ray
        self.data_dir = data_dir
        self.jobs: JobService | None = None
        self.codes: CodeBook | None = None
        self.pairing: PairingService | None = None
        self.announcer: Announcer | None = None
        self.storage: StorageArea | None = None
        self.summary: dict[str, float] = {"node_count": 0, "free_cpus": 0.0, "free_gpus": 0.0}
        self.handlers: dict[str, Handler] = {"code": self.op_code, "token": self.op_token}
        self.streams: dict[str, StreamHandler] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._start_jobs()
        self.storage = await storage_server.start_for_host(self)  # None: degraded, told why
        if self.storage is not None:
            self._tasks.append(
                asyncio.create_task(storage_server.keep_under_cap(self.storage, self))
            )
        await self._start_discovery()
        self._tasks.append(asyncio.create_task(self._refresh_summary()))

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for service in (self.announcer, self.pairing, self.jobs):
            if service is not None:
                service.close()
        if self.storage is not None:
            self.storage.stop()

    @property
    def free(self) -> dict[str, float] | None:
        """What Ray has not handed out (a few seconds old), once the first summary came."""
        return self.summary if "free_memory_gb" in self.summary else None

    # ----- the job queue ------------------------------------------------------------------

    async def _start_jobs(self) -> None:
        """The cluster's job queue lives on the host, in SQLite under the data dir."""
        from ..job_service import JobService

        node = self.node
        try:
            self.jobs = JobService(
                self.data_dir / "jobs.sqlite3",
                dashboard_url=lambda: node.creds.dashboard_url,
                token=lambda: node.creds.token,
                max_running=self.cfg["jobs.max_running_jobs"],
                cluster_ready=lambda: node.state is AgentState.READY,
                gcs_address=lambda: node.creds.gcs_address,
                ends_at=lambda: node.cluster_ends,
            )
            await self.jobs.start()
        except (OSError, LanrayError) as exc:
            log.error("the job queue is not available: %s", exc)
            self.jobs = None
            return
        self.handlers.update(self.jobs.handlers)
        self.streams.update(self.jobs.streams)

    # ----- discovery and pairing ----------------------------------------------------------

    async def _start_discovery(self) -> None:
        """Beacons and the pairing service: a host is found and joined without typing an IP.

        Imported here, after Ray was spawned, so that they do not delay the head's start.
        """
        from ..announcer import Announcer, PairingService
        from ..joincode import CodeBook

        cfg = self.cfg
        self.codes = CodeBook(
            ttl_s=cfg["pairing.code_ttl_s"],
            max_uses=cfg["pairing.code_uses"],
            max_failures=cfg["pairing.max_failures"],
        )
        self.codes.issue()  # the code 'host' prints and the host screen shows
        try:
            self.pairing = PairingService(
                self.codes, self.credentials_for_joiner, token=lambda: self.node.creds.token
            )
            await self.pairing.start(self.node.node_ip, cfg["pairing.port"])
            self.announcer = Announcer(
                cfg["discovery.port"],
                self.beacon,
                bytes.fromhex(self.node.creds.cluster_key),
                cfg["discovery.broadcast"],
                cfg["discovery.beacon_interval_s"],
            )
            await self.announcer.start()
        except OSError as exc:
            # Degrade: the cluster still works by address and token.
            log.error("discovery or pairing is not available: %s", exc)
            self.node.detail = f"discovery not available: {exc}"

    def beacon(self) -> Beacon:
        from .. import discovery
        from ..beacon import Beacon

        cfg, creds = self.cfg, self.node.creds
        return Beacon(
            cluster_id=creds.cluster_id,
            cluster_name=creds.cluster_name,
            host_name=discovery.own_hostname(),
            head_address=self.node.node_ip,
            gcs_port=cfg["ray.gcs_port"],
            dashboard_port=cfg["ray.dashboard_port"],
            pairing_port=cfg["pairing.port"],
            ray_version=ray_process.ray_version(),
            python_version=discovery.python_version(),
            runtime=cfg["runtime.kind"],
            node_count=int(self.summary["node_count"]),
            free_cpus=self.summary["free_cpus"],
            free_gpus=self.summary["free_gpus"],
            timestamp=time.time(),
            fingerprint=self.fingerprint,
        )

    @property
    def fingerprint(self) -> str:
        from ..beacon import fingerprint

        return fingerprint(bytes.fromhex(self.node.creds.cluster_key) + b"lanray fingerprint")

    def credentials_for_joiner(self, hello: dict[str, Any], csr_pem: bytes) -> dict[str, Any]:
        """What a joiner that paired gets: the credentials, the certificate this host's CA
        signs for its request and the CA's certificate. Raises ``CertError`` (the joiner gets
        one line) for a request the CA does not sign."""
        from ..cluster_ca import NodeTls

        c = self.node.creds
        tls = NodeTls(self.data_dir / "tls")  # Paths.tls_dir
        tls.ensure_ca(c.cluster_id, c.cluster_name)  # made at agent start; a no-op then
        cert = tls.sign(csr_pem)
        return {
            "cert": cert.decode(),
            "ca": tls.ca_cert.read_text(),
            "cluster_id": c.cluster_id,
            "cluster_name": c.cluster_name,
            "token": c.token,
            "cluster_key": c.cluster_key,
            "head_address": c.head_address,
            "gcs_port": c.gcs_port,
            "dashboard_port": c.dashboard_port,
        }

    # ----- the summary beacons carry ------------------------------------------------------

    async def _refresh_summary(self) -> None:
        """Node count and free resources, every few seconds (never overlapping)."""
        while not self.node.stopping.is_set():
            if self.node.state is AgentState.READY:
                with contextlib.suppress(LanrayError):
                    self.summary = await asyncio.to_thread(self.summarize)
            await self.clock.sleep(SUMMARY_EVERY_S)

    def summarize(self) -> dict[str, float]:
        alive = [n for n in self.ray.nodes() if n.state == "ALIVE"]
        usage = self.ray.usage()
        cpu_used = usage.get("CPU", (0.0, 0.0))[0]
        gpu_used = usage.get("GPU", (0.0, 0.0))[0]
        mem_used = usage.get("memory", (0.0, 0.0))[0] / GIB
        return {
            "node_count": len(alive),
            "free_cpus": max(0.0, sum(n.cpus for n in alive) - cpu_used),
            "free_gpus": max(0.0, sum(n.gpus for n in alive) - gpu_used),
            "free_memory_gb": round(max(0.0, sum(n.memory_gb for n in alive) - mem_used), 2),
        }

    # ----- ops ----------------------------------------------------------------------------

    async def op_code(self, req: p.CodeRequest) -> p.CodeReply:
        """The live join code; ``open``, ``uses``/``minutes`` and ``close`` act on pairing."""
        from ..joincode import CodeRequest

        if self.codes is None:
            raise LanrayError("join codes are not available yet: the host is still starting")
        self.codes.answer(CodeRequest.from_json(req.to_json()))
        return p.CodeReply.from_json({**self.pairing_view(), "pairing": self.pairing is not None})

    def pairing_view(self) -> dict[str, Any]:
        """The pairing part of ``code`` and ``status``: the live code and failed attempts."""
        if self.pairing is not None:
            return self.pairing.summary()
        return self.codes.summary() if self.codes is not None else {}

    async def op_token(self, req: p.TokenRequest) -> p.TokenReply:
        return p.TokenReply(self.node.creds.token)
