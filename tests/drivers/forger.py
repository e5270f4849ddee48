"""An attacker on the LAN: answers scan queries with a beacon for a real cluster id, unsigned."""

import socket
import sys
import time

from stranger import fake_beacon  # this folder: a script's own

from lanray_tui.core import beacon as wire

cluster_id, address, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
fake = fake_beacon(cluster_id, address)
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
