"""Finding hosts on the LAN: UDP beacons and queries, plus an ARP sweep when allowed.

A host answers a query at once by unicast, so a scan never waits for the next beacon. A
joiner that already holds a cluster's key checks each beacon's MAC: a beacon for a known
cluster without a valid MAC is shown as forged and never joined.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..adapters import arp, ray_process, system
from . import beacon as wire
from . import credentials, netinfo
from .config import Config


@dataclass(frozen=True)
class FoundHost:
    """One host as a joiner sees it."""

    host_name: str
    address: str
    cluster_name: str
    cluster_id: str
    ray_version: str
    python_version: str
    compatible: bool
    why_not: str
    interface: str
    verified: str  # "verified" | "forged" | "stale" | "unverified"
    gcs_port: int
    dashboard_port: int
    pairing_port: int
    node_count: int
    free_cpus: float
    free_gpus: float
    last_seen: float
    runtime: str = "native"
    # where the beacon came from: its head's own address, unless someone else sent it
    source: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """One entry per cluster, head and sender: a beacon forged in a host's name never
        takes the real host's place in a scan."""
        return self.cluster_id, self.address, self.source or self.address

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def compatibility(b: wire.Beacon) -> tuple[bool, str]:
    """Ray needs the same Ray and Python versions on every node."""
    ours_ray, ours_py = ray_process.ray_version(), python_version()
    if b.ray_version == ours_ray and b.python_version == ours_py:
        return True, ""
    return False, (
        f"host runs Ray {b.ray_version} on Python {b.python_version}, this machine Ray "
        f"{ours_ray} on Python {ours_py}: install Python {b.python_version} and "
        f"pip install 'ray[default]=={b.ray_version}'"
    )


def interface_for(address: str) -> str:
    """The local interface whose subnet holds ``address``."""
    ip = ipaddress.IPv4Address(address)
    for i in system.ipv4_interfaces():
        net = ipaddress.IPv4Network(f"{i.address}/{i.netmask}", strict=False)
        if ip in net:
            return i.name
    return "?"


def broadcast_targets() -> list[tuple[str, str]]:
    """(interface address, broadcast address) for each usable LAN interface."""
    out = []
    for i in netinfo.lan_interfaces():
        net = ipaddress.IPv4Network(f"{i.address}/{i.netmask}", strict=False)
        if net.prefixlen < 31:
            out.append((i.address, str(net.broadcast_address)))
    return out


def _known_key(cluster_id: str) -> bytes | None:
    from .paths import Paths

    try:
        creds = credentials.load(Paths.from_env().credentials)
    except Exception:
        return None
    if creds is not None and creds.cluster_id == cluster_id and creds.cluster_key:
        return bytes.fromhex(creds.cluster_key)
    return None


@dataclass
class ScanResult:
    hosts: list[FoundHost] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped: int = 0


class Prober:
    """A joiner's UDP socket: sends queries, collects answers and beacons."""

    def __init__(self, port: int, key_for: Callable[[str], bytes | None] = _known_key) -> None:
        self.port = port
        self.key_for = key_for
        self.stats = wire.DecodeStats()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.own = {i.address for i in system.ipv4_interfaces()}

    def close(self) -> None:
        self.sock.close()

    def query_broadcast(self) -> None:
        packet = wire.encode_query(wire.Query(secrets.token_hex(8)))
        for _, bcast in broadcast_targets():
            # A link that is down fails alone: the other interfaces still count.
            with contextlib.suppress(OSError):
                self.sock.sendto(packet, (bcast, self.port))

    def query_unicast(self, addresses: list[str]) -> None:
        packet = wire.encode_query(wire.Query(secrets.token_hex(8)))
        for a in addresses:
            with contextlib.suppress(OSError):
                self.sock.sendto(packet, (a, self.port))

    def receive(self, timeout: float) -> FoundHost | None:
        """One host from the next valid beacon, or None on timeout or a dropped packet."""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return None
        try:
            packet, (src, _) = self.sock.recvfrom(wire.MAX_PACKET + 1)
        except OSError:
            return None
        return self.to_host(packet, src)

    def to_host(self, packet: bytes, src: str) -> FoundHost | None:
        decoded = wire.decode(packet, self.stats)
        if decoded is None or decoded.beacon is None:
            return None
        b = decoded.beacon
        key = self.key_for(b.cluster_id)
        verified = wire.verify(decoded, key, time.time()) if key is not None else "unverified"
        ok, why = compatibility(b)
        if src != b.head_address:
            # A beacon names its own head: one naming another machine is a spoof (or a
            # misconfigured host); it can be joined by address, never by its name.
            ok, why = False, f"its beacon came from {src} but names {b.head_address} as head"
        return FoundHost(
            host_name=b.host_name,
            address=b.head_address,
            cluster_name=b.cluster_name,
            cluster_id=b.cluster_id,
            ray_version=b.ray_version,
            python_version=b.python_version,
            compatible=ok,
            why_not=why,
            interface=interface_for(src),
            verified=verified,
            gcs_port=b.gcs_port,
            dashboard_port=b.dashboard_port,
            pairing_port=b.pairing_port,
            node_count=b.node_count,
            free_cpus=b.free_cpus,
            free_gpus=b.free_gpus,
            last_seen=time.time(),
            runtime=b.runtime,
            source=src,
        )


# A scan waits for its ARP sweep (scapy's import and the sweep's own timeout) this long past
# its timeout, then this long for the swept hosts to answer their unicast queries.
ARP_GRACE_S = 2.0
UNICAST_WAIT_S = 0.3


def arp_candidates(timeout: float = 0.5) -> tuple[list[str], str]:
    """Live addresses on each local subnet of /24 or smaller, and a note on what was done."""
    perm = arp.permission()
    if not perm.allowed:
        return [], perm.reason
    live: list[str] = []
    swept = []
    for i in netinfo.lan_interfaces():
        net = ipaddress.IPv4Network(f"{i.address}/{i.netmask}", strict=False)
        if net.prefixlen < 24:
            continue  # too large to sweep politely
        try:
            live += [a for a in arp.sweep(i.name, str(net), timeout) if a != i.address]
            swept.append(f"{net} on {i.name}")
        except (OSError, PermissionError) as exc:
            return live, f"ARP scan of {net} failed: {exc}"
    return live, ("ARP swept " + ", ".join(swept)) if swept else "ARP: no subnet of /24 or smaller"


def scan(
    cfg: Config, timeout: float = 1.0, use_arp: bool = True, until_first: bool = False
) -> ScanResult:
    """Query the LAN and collect hosts for ``timeout`` seconds (or until the first one).

    The ARP sweep runs beside the broadcast query, in a thread, so a host that answers the
    broadcast is listed at once; each address the sweep finds then gets a unicast query. A
    sweep still running at ``timeout`` holds the scan up to :data:`ARP_GRACE_S` longer (its
    hosts are the ones broadcast cannot find), unless ``until_first`` already has one.
    """
    result = ScanResult()
    prober = Prober(cfg["discovery.port"])
    seen: dict[tuple[str, str, str], FoundHost] = {}
    swept: list[str] = []
    sweeper: threading.Thread | None = None
    if use_arp:

        def sweep() -> None:
            live, note = arp_candidates()
            result.notes.append(note)
            swept.extend(a for a in live if a not in prober.own)

        sweeper = threading.Thread(target=sweep, name="arp-sweep", daemon=True)
        sweeper.start()
    try:
        prober.query_broadcast()
        deadline = time.monotonic() + timeout
        hard = deadline + ARP_GRACE_S  # a sweep still running holds the scan this long
        answers_until = 0.0  # when the unicast queries to the swept addresses have had time
        while not (until_first and seen):
            now = time.monotonic()
            end = max(deadline, hard if sweeper is not None else 0.0, answers_until)
            left = end - now
            if left <= 0:
                break
            host = prober.receive(min(left, 0.05))
            if host is not None:
                seen[host.key] = host
            if sweeper is not None and not sweeper.is_alive():
                sweeper = None
                if swept:
                    prober.query_unicast(swept)
                    answers_until = time.monotonic() + UNICAST_WAIT_S
        result.dropped = prober.stats.dropped
    finally:
        prober.close()
    if sweeper is not None:
        result.notes.append("ARP sweep did not finish within the scan time")
    result.hosts = sorted(seen.values(), key=lambda h: (h.cluster_name, h.address))
    return result


def watch(cfg: Config, on_host: Callable[[FoundHost], None], stop: threading.Event) -> None:
    """Report hosts as they answer, querying once a second, until ``stop`` is set."""
    prober = Prober(cfg["discovery.port"])
    try:
        next_query = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_query:
                prober.query_broadcast()
                next_query = now + 1.0
            host = prober.receive(0.2)
            if host is not None:
                on_host(host)
    finally:
        prober.close()


def own_hostname() -> str:
    return (os.environ.get("LANRAY_NODE_NAME") or socket.gethostname())[:64] or "node"
