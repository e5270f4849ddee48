"""An attacker on the LAN: answers scan queries with a beacon for a real cluster id, unsigned."""

import socket
import sys
import time

from lanray_tui.core import beacon as wire

cluster_id, address, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
fake = wire.Beacon(
    cluster_id=cluster_id,
    cluster_name="evil",
    host_name="evil",
    head_address=address,
    gcs_port=6379,
    dashboard_port=8265,
    pairing_port=47475,
    ray_version="2.60.0",
    python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
    runtime="native",
    node_count=1,
    free_cpus=64.0,
    free_gpus=8.0,
    timestamp=time.time(),
    fingerprint="00" * 16,
)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 47474))
s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(2048)
    except TimeoutError:
        continue
    decoded = wire.decode(data)
    if decoded is not None and decoded.kind == "query":
        s.sendto(wire.encode_beacon(fake), peer)
