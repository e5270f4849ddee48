"""Running the network doctor: measure each check (through :mod:`..adapters.netprobe` and the
other adapters) and hand the numbers to :mod:`.doctor` for the verdicts.

Every packet goes to the host's address only (pings, dials, one UDP query); broadcasts are
only listened to. The probes run side by side, so a whole run takes a few seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..adapters import arp, netprobe, nvml, ray_process, system
from . import beacon as wire
from . import credentials, discovery, doctor, netinfo
from .config import Config
from .errors import LanrayError

ASK_TIMEOUT_S = 6.0  # the host dials for at most 2 s; a dropped TLS connect waits this long


@dataclass(frozen=True)
class Target:
    """The host the doctor examines, and how it was chosen."""

    address: str
    how: str  # "given", "found by scan", "from this node's credentials"


def resolve(cfg: Config, target: str | None) -> Target:
    """``target`` (an address, or a host or cluster name a scan finds); with none, the host
    of this node's credentials, else the one host a scan finds."""
    from .lifecycle import find_host

    if target:
        try:
            ipaddress.IPv4Address(target)
            return Target(target, "given")
        except ValueError:
            pass
        found = find_host(cfg, target)
        if found is None:  # pragma: no cover - find_host raises for a name
            raise LanrayError(f"no host named '{target}' answered on the LAN")
        return Target(found.address, "found by scan")
    creds = credentials.load(cfg.paths().credentials)
    if creds is not None and creds.head_address:
        return Target(netinfo.resolve_ipv4(creds.head_address), "from this node's credentials")
    found = find_host(cfg, None)
    if found is None:  # pragma: no cover - find_host raises when none answers
        raise LanrayError("no host answered on the LAN (see 'lanray-tui scan')")
    return Target(found.address, "found by scan")


def _firewalls() -> tuple[doctor.Firewall, doctor.Firewall]:
    """(this machine's firewall, the guess for the host's: the same tool, default chain)."""
    fw = netprobe.firewall()
    own = doctor.Firewall(fw.tool, fw.table or "inet filter", fw.chain or "input")
    return own, doctor.Firewall(fw.tool)


def _beacon(head: str, port: int, tries: int = 3) -> tuple[wire.Beacon | None, float, float]:
    """The host's beacon, asked by unicast: (beacon, skew of this clock, its uncertainty)."""
    query = wire.encode_query(wire.Query(os.urandom(8).hex()))
    for _ in range(tries):
        data, sent, received = netprobe.udp_exchange(head, port, query, 1.0)
        decoded = wire.decode(data) if data else None
        if decoded is not None and decoded.beacon is not None:
            half = (received - sent) / 2
            return decoded.beacon, (sent + half) - decoded.beacon.timestamp, half
    return None, 0.0, 0.0


def _broadcast_heard(port: int, seconds: float, head: str, own_ip: str) -> bool | None:
    """Whether a beacon from the host arrived by broadcast (None: the port cannot be bound)."""
    grams, problem = netprobe.listen_udp(port, seconds, head)
    if problem:
        return None
    for g in grams:
        decoded = wire.decode(g.data)
        if decoded is not None and decoded.beacon is not None and g.destination != own_ip:
            return True
    return False


def _ping(head: str, iface_mtu: int | None) -> tuple[int | None, int | None, str]:
    """(packets lost of LOSS_PROBES, path MTU, why not measured)."""
    with netprobe.Pinger(head) as p:
        if p.problem:
            return None, None, p.problem
        lost = p.loss(doctor.LOSS_PROBES)
        if lost == doctor.LOSS_PROBES or iface_mtu is None:
            return lost, None, ""
        return lost, p.path_mtu(iface_mtu), ""


def _probe_back(
    cfg: Config, head: str, own_ip: str, ports: list[int]
) -> tuple[dict[int, str] | None, str, str]:
    """The host dials this node's ports back (the ``probe`` op, over the cluster API's mutual
    TLS), while this node listens on them: (port -> result, or None; why it was not asked;
    why asking failed)."""
    from . import cluster_api
    from . import protocol as p
    from .cluster_ca import NodeTls

    tls = NodeTls(cfg.paths().tls_dir)
    if not tls.ready():
        return None, doctor.NOT_PAIRED, ""
    try:
        ctx = tls.client_context()
        with netprobe.Listeners(own_ip, ports):
            reply = asyncio.run(
                cluster_api.ask(
                    head, cfg["cluster.api_port"], p.ProbeRequest(ports=ports), ctx, ASK_TIMEOUT_S
                )
            )
    except LanrayError as exc:
        return None, "", f"the host refused the probe: {exc}"
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        why = f"{type(exc).__name__} {exc}".strip()
        return None, "", f"the host's cluster API did not answer ({why})"
    out: dict[int, str] = {}
    for k, v in reply.ports.items():
        if k.isdigit():
            out[int(k)] = v
    return out, "", ""


def _docker(cfg: Config, gpus: int) -> doctor.Result:
    kind = cfg["runtime.kind"]
    if kind != "docker":
        return doctor.docker(kind, None, False, gpus)
    from ..adapters import docker_engine

    try:
        engine = docker_engine.connect(timeout=5)
    except Exception as exc:  # the adapter's one-line errors; anything else the same way
        return doctor.docker(kind, str(exc).splitlines()[0] if str(exc) else repr(exc), False, 0)
    ids = nvml.device_request_ids() if gpus else []
    return doctor.docker(kind, None, engine.has_nvidia(), gpus, ids)


def _http_guard(cfg: Config) -> doctor.Result:
    """The running agent's guard on Ray's HTTP ports; with no agent, the one it would set."""
    from .cluster_ca import NodeTls
    from .control import ControlClient
    from .guard import preview

    paths = cfg.paths()
    try:
        view = ControlClient(paths.socket).info(timeout=3.0).guard
    except LanrayError:
        view = {}
    if view:
        return doctor.http_guard(view, from_agent=True)
    creds = credentials.load(paths.credentials)
    host = creds is None or NodeTls(paths.tls_dir).ca_key.is_file()  # the CA stays on the host
    node_ip = cfg["ray.node_ip"] or netinfo.ip_for_host()
    head = creds.head_address if creds is not None else ""
    return doctor.http_guard(preview(cfg.__getitem__, host, node_ip, head).to_json(), False)


def _local(cfg: Config) -> list[doctor.Result]:
    """The checks that need no host: the guard on Ray's HTTP ports, the GPU, Docker, raw
    sockets."""
    count, why = nvml.gpu_count_and_reason()
    driver, cuda = nvml.driver_versions() if count else ("", "")
    perm = arp.permission()
    return [
        _http_guard(cfg),
        doctor.gpu(count, why, driver, cuda),
        _docker(cfg, count),
        doctor.raw_sockets(perm.allowed, perm.reason, os.path.realpath(sys.executable)),
    ]


def _is_own(address: str) -> bool:
    if ipaddress.IPv4Address(address).is_loopback:
        return True
    return address in {i.address for i in system.ipv4_interfaces()}


def diagnose(cfg: Config, target: Target) -> doctor.Report:
    """Every check against ``target``'s host (on the host itself: its own side)."""
    head = target.address
    if os.environ.get("LANRAY_NO_LAN") == "1" and not ipaddress.IPv4Address(head).is_loopback:
        # the test suite's guard: nothing is sent on the machine's real network
        raise LanrayError(f"LANRAY_NO_LAN=1: the doctor sends nothing to {head}")
    report = doctor.Report(head, notes=[f"host {head} ({target.how})"])
    own_fw, host_fw = _firewalls()
    get = cfg.__getitem__
    ours = (ray_process.ray_version(), discovery.python_version())
    if _is_own(head):
        return _host_side(cfg, report, own_fw, ours)
    own_ip = netinfo.route_source(head)
    by_addr = {i.address: i for i in system.ipv4_interfaces()}
    iface = by_addr.get(own_ip or "")
    name = iface.name if iface else None
    kind = netprobe.interface_kind(name) if name else ""
    report.results.append(doctor.interface(name, own_ip, kind, head))
    if not name or not own_ip:
        report.results += _local(cfg)
        return report
    iface_mtu = netprobe.mtu(name)
    to_host = doctor.RayPorts.from_config(get, head=True)
    back = doctor.RayPorts.from_config(get, head=False)
    api_port = get("cluster.api_port")
    disc_port = get("discovery.port")
    listen_s = min(5.0, max(1.5, 2.5 * get("discovery.beacon_interval_s")))
    with ThreadPoolExecutor(max_workers=5) as pool:
        f_bcast = pool.submit(_broadcast_heard, disc_port, listen_s, head, own_ip)
        f_beacon = pool.submit(_beacon, head, disc_port)
        f_dials = pool.submit(netprobe.dial_many, head, [*to_host.roles, api_port])
        f_ping = pool.submit(_ping, head, iface_mtu)
        f_back = pool.submit(_probe_back, cfg, head, own_ip, list(back.roles))
        beacon, skew, half = f_beacon.result()
        dials = f_dials.result()
        lost, pmtu, ping_skip = f_ping.result()
        found_back, back_skip, back_failed = f_back.result()
        heard = f_bcast.result()
    r = report.results
    r.append(doctor.ports_to_host(to_host, dials, head, host_fw))
    r.append(doctor.ports_from_host(back, found_back, own_fw, back_skip, back_failed))
    theirs = (beacon.ray_version, beacon.python_version) if beacon else None
    r.append(doctor.versions(ours, theirs))
    r.append(doctor.clock(skew if beacon else None, half))
    r.append(doctor.path_mtu(name, iface_mtu, pmtu, ping_skip))
    r.append(doctor.loss(lost, doctor.LOSS_PROBES, name, ping_skip))
    r.append(
        doctor.isolation(
            heard,
            beacon is not None,
            dials.get(api_port, "timeout"),
            head,
            api_port,
            host_fw,
            disc_port,
        )
    )
    r += _local(cfg)
    return report


def _host_side(
    cfg: Config, report: doctor.Report, own_fw: doctor.Firewall, ours: tuple[str, str]
) -> doctor.Report:
    """The doctor on the host: its interface, which Ray ports listen, its versions."""
    own_ip = netinfo.ip_for_host()
    by_addr = {i.address: i for i in system.ipv4_interfaces()}
    iface = by_addr.get(own_ip)
    name = iface.name if iface else "lo"
    report.results.append(doctor.interface(name, own_ip, netprobe.interface_kind(name), own_ip))
    ray = doctor.RayPorts.from_config(cfg.__getitem__, head=True)
    report.results.append(doctor.host_side(ray, netprobe.dial_many(own_ip, ray.roles), own_fw))
    report.results.append(
        doctor.Result(
            "versions",
            "Versions (Ray, Python)",
            doctor.Mark.PASS,
            f"Ray {ours[0]}, Python {ours[1]} (joiners need the same)",
        )
    )
    report.notes.append("this is the host: run 'lanray-tui doctor' on a joiner for the paths")
    report.results += _local(cfg)
    return report
