"""What the host serves its members on the cluster API besides heartbeats and the job queue.

A worker's agent cannot reach the head's dashboard (it listens on the head's loopback only),
so it asks the host for Ray's rows of the nodes and for the tasks that still run on itself
while it drains. A member whose address changed asks for a certificate that names its new
address, over the mutual TLS its current certificate opens.
"""

from __future__ import annotations

import asyncio
import logging

from .. import protocol as p
from ..cluster_ca import CertError, NodeTls
from ..errors import LanrayError
from .control_server import PEER_IP
from .ray_link import RayView

log = logging.getLogger("lanray.agent")

PROBE_TIMEOUT_S = 2.0
PROBE_PARALLEL = 32


async def dial(address: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str:
    """One TCP connect: ``open``, ``refused``, ``timeout`` or ``error: ...``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except ConnectionRefusedError:
        return "refused"
    except asyncio.TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"
    writer.close()
    return "open"


class MemberOps:
    def __init__(self, ray: RayView, tls: NodeTls) -> None:
        self.ray = ray
        self.tls = tls

    async def op_ray_nodes(self, req: p.RayNodesRequest) -> p.RayNodesReply:
        return p.RayNodesReply(await asyncio.to_thread(self.ray.nodes))

    async def op_running_tasks(self, req: p.RunningTasksRequest) -> p.CountReply:
        return p.CountReply(await asyncio.to_thread(self.ray.running_tasks, req.node_id))

    async def op_probe(self, req: p.ProbeRequest) -> p.ProbeReply:
        """Dial back the asking member (only its own address: the TLS peer's) on its ports."""
        address = PEER_IP.get()
        if not address:
            raise LanrayError("probe: no member address to dial")
        gate = asyncio.Semaphore(PROBE_PARALLEL)

        async def one(port: int) -> tuple[str, str]:
            async with gate:
                return str(port), await dial(address, port)

        results = await asyncio.gather(*(one(port) for port in dict.fromkeys(req.ports)))
        return p.ProbeReply(address, dict(results))

    async def op_certify(self, req: p.CertifyRequest) -> p.CertifyReply:
        try:
            cert = await asyncio.to_thread(self.tls.sign, req.csr.encode())
        except CertError as exc:
            raise LanrayError(f"certify: {exc}") from None
        log.info("signed a new certificate for a member")
        return p.CertifyReply(cert.decode(), self.tls.ca_cert.read_text())
