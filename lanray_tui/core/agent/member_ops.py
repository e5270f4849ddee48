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
from .ray_link import RayView

log = logging.getLogger("lanray.agent")


class MemberOps:
    def __init__(self, ray: RayView, tls: NodeTls) -> None:
        self.ray = ray
        self.tls = tls

    async def op_ray_nodes(self, req: p.RayNodesRequest) -> p.RayNodesReply:
        return p.RayNodesReply(await asyncio.to_thread(self.ray.nodes))

    async def op_running_tasks(self, req: p.RunningTasksRequest) -> p.CountReply:
        return p.CountReply(await asyncio.to_thread(self.ray.running_tasks, req.node_id))

    async def op_certify(self, req: p.CertifyRequest) -> p.CertifyReply:
        try:
            cert = await asyncio.to_thread(self.tls.sign, req.csr.encode())
        except CertError as exc:
            raise LanrayError(f"certify: {exc}") from None
        log.info("signed a new certificate for a member")
        return p.CertifyReply(cert.decode(), self.tls.ca_cert.read_text())
