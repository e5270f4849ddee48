"""A host as far as the network doctor can tell, without Ray: the real beacon announcer
(broadcast beacons, answers to queries), plain TCP listeners on Ray's fixed ports, and the
real cluster API over mutual TLS serving the ``probe`` op.

    python doctor_head.py TLS_DIR RAY_VERSION CLOCK_SKEW_S PORT...

Runs until killed; prints "ready" once everything listens.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from lanray_tui.core import beacon as wire
from lanray_tui.core import discovery, netinfo
from lanray_tui.core.agent.control_server import ControlServer
from lanray_tui.core.agent.member_ops import MemberOps
from lanray_tui.core.announcer import Announcer
from lanray_tui.core.cluster_ca import NodeTls
from lanray_tui.core.config import load


class NoRay:
    """The probe op needs no Ray; the others are not asked."""

    def nodes(self, timeout: float = 5.0) -> list[object]:
        return []

    def usage(self) -> dict[str, tuple[float, float]]:
        return {}

    def running_tasks(self, node_id: str) -> int:
        return 0

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool:
        return False


async def main() -> None:
    tls_dir, ray_version, skew = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    ports = [int(p) for p in sys.argv[4:]]
    cfg = load()
    address = netinfo.ip_for_host()

    def make_beacon() -> wire.Beacon:
        return wire.Beacon(
            cluster_id="d0c70d0c70d0c70d",
            cluster_name="doctorlab",
            host_name="head",
            head_address=address,
            gcs_port=cfg["ray.gcs_port"],
            dashboard_port=cfg["ray.dashboard_port"],
            pairing_port=cfg["pairing.port"],
            ray_version=ray_version,
            python_version=discovery.python_version(),
            runtime="native",
            node_count=1,
            free_cpus=1.0,
            free_gpus=0.0,
            timestamp=time.time() + skew,
            fingerprint="00" * 16,
        )

    announcer = Announcer(cfg["discovery.port"], make_beacon, os.urandom(32), True, 0.5)
    await announcer.start()
    for port in ports:
        await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", port)
    tls = NodeTls(tls_dir)
    server = ControlServer()
    server.handlers["probe"] = MemberOps(NoRay(), tls).op_probe  # type: ignore[arg-type]
    await asyncio.start_server(
        server.serve_remote, address, cfg["cluster.api_port"], ssl=tls.server_context()
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
