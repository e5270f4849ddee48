"""The network doctor's verdicts: what each measurement means, and the fix to type.

Pure: every function here takes what was measured (by :mod:`.doctor_run`, through the
:mod:`..adapters.netprobe` adapter) and returns a :class:`Result`, so the verdicts and the
fix lines are tested without a network. A fix that changes a firewall is written for the
tool this machine uses (firewalld, ufw, nft or iptables).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# What a probe of a TCP port found: the adapter's words.
OPEN, REFUSED, TIMEOUT = "open", "refused", "timeout"

CLOCK_WARN_S = 1.0
CLOCK_FAIL_S = 30.0  # a signed beacon further off than this is "stale" (beacon.verify)
LOSS_PROBES = 30


class Mark(enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


SYMBOLS = {Mark.PASS: "✔", Mark.WARN: "⚠", Mark.FAIL: "✘", Mark.SKIP: "-"}


@dataclass(frozen=True)
class Result:
    """One line of the checklist: its verdict, what was measured, and the fix for a ✘/⚠."""

    check: str  # a stable key: "interface", "ports_to_host", ...
    title: str
    mark: Mark
    value: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "title": self.title,
            "mark": self.mark.value,
            "value": self.value,
            "fix": self.fix,
        }


@dataclass
class Report:
    """The whole checklist for one host."""

    host: str
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(r.mark is Mark.FAIL for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.ok,
            "checks": [r.to_json() for r in self.results],
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """The checklist as text: one line per check, an indented fix line under ✘ and ⚠."""
        width = max((len(r.title) for r in self.results), default=0)
        out = []
        for r in self.results:
            out.append(f"{SYMBOLS[r.mark]} {r.title.ljust(width)}  {r.value}")
            if r.fix and r.mark in (Mark.FAIL, Mark.WARN):
                out.append(f"    fix: {r.fix}")
        return out


# ----- firewall fix lines --------------------------------------------------------------------


@dataclass(frozen=True)
class Firewall:
    """The firewall tool of the machine the fix is for (netprobe's :class:`Firewall`)."""

    tool: str  # "firewalld" | "ufw" | "nft" | "iptables" | ""
    table: str = "inet filter"
    chain: str = "input"


Span = tuple[int, int]  # an inclusive range of ports; (p, p) for one


def spans(ports: Iterable[int | Span]) -> list[Span]:
    """Ports and ranges, sorted, with overlaps and neighbours merged."""
    items = sorted((p, p) if isinstance(p, int) else p for p in ports)
    out: list[Span] = []
    for lo, hi in items:
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def open_ports_command(fw: Firewall, ports: Iterable[int | Span], proto: str = "tcp") -> str:
    """The command that lets ``proto`` (tcp or udp) in on ``ports`` with ``fw``'s tool."""
    sp = spans(ports)

    def each(sep: str) -> list[str]:
        return [str(lo) if lo == hi else f"{lo}{sep}{hi}" for lo, hi in sp]

    if fw.tool == "firewalld":
        adds = " ".join(f"--add-port={p}/{proto}" for p in each("-"))
        return f"sudo firewall-cmd --permanent {adds} && sudo firewall-cmd --reload"
    if fw.tool == "ufw":
        return f"sudo ufw allow {','.join(each(':'))}/{proto}"
    if fw.tool == "nft":
        listed = each("-")
        dport = listed[0] if len(listed) == 1 else "{ " + ", ".join(listed) + " }"
        return f"sudo nft insert rule {fw.table} {fw.chain} {proto} dport {dport} accept"
    if fw.tool == "iptables":
        dports = ",".join(each(":"))
        return f"sudo iptables -I INPUT -p {proto} -m multiport --dports {dports} -j ACCEPT"
    return f"let {proto.upper()} in on ports {', '.join(each('-'))} in this machine's firewall"


# ----- the checks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RayPorts:
    """The ports Ray needs, by role, from the config (``ray.*``)."""

    roles: Mapping[int, str]  # port -> what it is ("GCS", "node manager", "worker", ...)
    worker_range: Span

    @classmethod
    def from_config(cls, get: Any, head: bool) -> RayPorts:
        """``get`` reads a dotted config key. ``head``: the head's (with the GCS), else the
        ones every node listens on for the others. Workers: the range's ends and its middle."""
        roles: dict[int, str] = {}
        if head:
            roles[get("ray.gcs_port")] = "GCS"
        roles[get("ray.object_manager_port")] = "object manager"
        roles[get("ray.node_manager_port")] = "node manager"
        roles[get("ray.dashboard_agent_grpc_port")] = "dashboard agent"
        # not Ray's plain-HTTP ports (the runtime-env agent's, the metrics'): only the node
        # itself uses them, and the agent's guard keeps them from the LAN (see .guard)
        lo, hi = get("ray.min_worker_port"), get("ray.max_worker_port")
        for p in dict.fromkeys((lo, (lo + hi) // 2, hi)):
            roles.setdefault(p, "worker")
        return cls(roles, (lo, hi))

    def fix_ports(self, failed: Iterable[int]) -> list[int | Span]:
        """What to open for ``failed``: a worker port stands for the whole worker range."""
        out: list[int | Span] = []
        for p in failed:
            out.append(self.worker_range if self.roles.get(p) == "worker" else p)
        return out


def _port_value(ray: RayPorts, found: Mapping[int, str]) -> tuple[list[int], str]:
    """(the ports that failed, a one-line summary of all)."""
    ports = sorted(ray.roles)
    bad = [p for p in ports if found.get(p, "missing") not in (OPEN, REFUSED)]
    opened = [p for p in ports if found.get(p) == OPEN]
    refused = [p for p in ports if found.get(p) == REFUSED]
    parts = []
    for p in bad:
        state = found.get(p, "not probed")
        why = "dropped: timeout" if state == TIMEOUT else state
        parts.append(f"{p} {ray.roles[p]}: {why}")
    if opened:
        parts.append("open " + " ".join(map(str, opened)))
    if refused:
        parts.append("reachable, nothing listening " + " ".join(map(str, refused)))
    return bad, "; ".join(parts)


def ports_to_host(ray: RayPorts, found: Mapping[int, str], host: str, host_fw: Firewall) -> Result:
    """This node dialled the host's Ray ports: a timeout is a firewall dropping them
    (``refused`` still reached the host: a worker port listens only while a worker runs)."""
    title = "Ray ports, this node -> host"
    bad, value = _port_value(ray, found)
    if bad:
        fix = f"on the host {host}: {open_ports_command(host_fw, ray.fix_ports(bad))}"
        return Result("ports_to_host", title, Mark.FAIL, value, fix)
    gcs = [p for p, role in ray.roles.items() if role == "GCS"]
    if gcs and found.get(gcs[0]) == REFUSED:
        return Result(
            "ports_to_host",
            title,
            Mark.WARN,
            value,
            f"nothing listens on the GCS port {gcs[0]}: start the host ('lanray-tui host')",
        )
    return Result("ports_to_host", title, Mark.PASS, value)


def ports_from_host(
    ray: RayPorts,
    found: Mapping[int, str] | None,
    own_fw: Firewall,
    skip: str = "",
    failed: str = "",
) -> Result:
    """The host dialled this node's Ray ports back (the ``probe`` op). ``skip`` says why it
    was not asked (no certificate yet); ``failed`` why asking did not work."""
    title = "Ray ports, host -> this node"
    if failed:
        return Result(
            "ports_from_host",
            title,
            Mark.WARN,
            failed,
            "is the host's agent up ('lanray-tui status' there)? a path MTU below the "
            "interface's (see MTU) stalls TLS",
        )
    if found is None:
        return Result("ports_from_host", title, Mark.SKIP, skip or "not measured")
    bad, value = _port_value(ray, found)
    if bad:
        fix = open_ports_command(own_fw, ray.fix_ports(bad))
        return Result("ports_from_host", title, Mark.FAIL, value, fix)
    return Result("ports_from_host", title, Mark.PASS, value)


NOT_PAIRED = "not available before pairing: pair, then run doctor again"


def interface(name: str | None, address: str | None, kind: str, host: str) -> Result:
    """The interface the route to the host leaves by; Wi-Fi, a VPN, a bridge and link-local
    addresses work badly or not at all for Ray."""
    title = "Interface"
    if not name or not address:
        return Result(
            "interface",
            title,
            Mark.FAIL,
            f"no route to {host}",
            f"ip route get {host}   (check the cable, the Wi-Fi network, the address)",
        )
    value = f"{name} {address} ({kind})"
    if address.startswith("169.254."):
        return Result(
            "interface",
            title,
            Mark.WARN,
            value + ", link-local: no DHCP lease",
            f"sudo dhclient {name}   (or give {name} an address on the LAN)",
        )
    fixes = {
        "wifi": "Wi-Fi drops and isolates clients: use a wired link for Ray if you can",
        "vpn": f"the route to {host} goes through a VPN: route the LAN outside it, "
        "or set ray.node_ip to this machine's LAN address",
        "bridge": f"{name} is a bridge (Docker/VM): set ray.node_ip to the LAN address",
    }
    if kind in fixes:
        return Result("interface", title, Mark.WARN, value, fixes[kind])
    return Result("interface", title, Mark.PASS, value)


def versions(ours: tuple[str, str], theirs: tuple[str, str] | None) -> Result:
    """Ray and Python must match the host's exactly (``theirs`` from its beacon)."""
    title = "Versions (Ray, Python)"
    mine = f"this node Ray {ours[0]}, Python {ours[1]}"
    if theirs is None:
        return Result("versions", title, Mark.SKIP, f"{mine}; the host sent no beacon")
    value = f"{mine}; host Ray {theirs[0]}, Python {theirs[1]}"
    if ours == theirs:
        return Result("versions", title, Mark.PASS, value)
    fixes = []
    if ours[1] != theirs[1]:
        fixes.append(f"install Python {theirs[1]} and lanray-tui in it")
    if ours[0] != theirs[0]:
        fixes.append(f"pip install 'ray[default]=={theirs[0]}'")
    return Result("versions", title, Mark.FAIL, value, "; ".join(fixes))


def gpu(count: int, reason: str, driver: str = "", cuda: str = "") -> Result:
    """The GPU's driver and the CUDA version it supports (informative: the host's is not
    known here)."""
    title = "GPU driver, CUDA"
    if count == 0:
        return Result("gpu", title, Mark.SKIP, f"no GPU ({reason})" if reason else "no GPU")
    if not driver:
        return Result(
            "gpu", title, Mark.WARN, f"{count} GPU(s), driver version unreadable", "nvidia-smi"
        )
    return Result("gpu", title, Mark.PASS, f"{count} GPU(s), driver {driver}, CUDA {cuda or '?'}")


def clock(skew_s: float | None, uncertainty_s: float) -> Result:
    """This clock minus the host's, from its beacon's timestamp and the query's round trip."""
    title = "Clock skew"
    if skew_s is None:
        return Result("clock", title, Mark.SKIP, "the host sent no beacon")
    value = f"{skew_s:+.2f} s (±{uncertainty_s:.2f} s)"
    fix = "sudo timedatectl set-ntp true   (on both machines)"
    off = abs(skew_s) - uncertainty_s
    if off > CLOCK_FAIL_S:
        return Result("clock", title, Mark.FAIL, value + ": beacons look stale", fix)
    if off > CLOCK_WARN_S:
        return Result("clock", title, Mark.WARN, value + ": logs and timeouts disagree", fix)
    return Result("clock", title, Mark.PASS, value)


def path_mtu(iface: str, iface_mtu: int | None, measured: int | None, skip: str = "") -> Result:
    """The largest packet that crosses the path unfragmented, against the interface's MTU:
    a smaller path MTU drops big packets silently (TCP hangs mid-transfer)."""
    title = "MTU"
    if skip:
        return Result("mtu", title, Mark.SKIP, skip)
    if iface_mtu is None:
        return Result("mtu", title, Mark.SKIP, f"the MTU of {iface} cannot be read")
    if measured is None:
        return Result(
            "mtu",
            title,
            Mark.WARN,
            f"{iface} {iface_mtu}; the host does not answer ping (ICMP blocked?)",
            "let ICMP echo through to measure the path",
        )
    if measured < iface_mtu:
        return Result(
            "mtu",
            title,
            Mark.FAIL,
            f"{iface} {iface_mtu}, path {measured}: larger packets are dropped on the way",
            f"sudo ip link set dev {iface} mtu {measured}   (or raise the MTU on the path)",
        )
    return Result("mtu", title, Mark.PASS, f"{iface} {iface_mtu}, path {measured}")


def loss(lost: int | None, sent: int, iface: str, skip: str = "") -> Result:
    """Packet loss to the host: Ray's heartbeats and object transfers suffer from a few %."""
    title = "Packet loss"
    if skip or lost is None:
        return Result("loss", title, Mark.SKIP, skip or "not measured")
    pct = 100.0 * lost / sent if sent else 0.0
    value = f"{pct:.0f} % ({lost} of {sent} pings lost)"
    fix = f"ip -s link show dev {iface}   (errors and drops; a cable or Wi-Fi signal problem)"
    if lost >= 2:
        return Result("loss", title, Mark.FAIL, value, fix)
    if lost == 1:
        return Result("loss", title, Mark.WARN, value, fix)
    return Result("loss", title, Mark.PASS, value)


def isolation(
    broadcast: bool | None,
    udp_unicast: bool,
    tcp: str,
    host: str,
    api_port: int,
    host_fw: Firewall,
    discovery_port: int = 47474,
) -> Result:
    """Broadcast beacons heard against unicast to the host (a UDP query to its discovery
    port, TCP to its cluster API): Wi-Fi client isolation often lets one through and not the
    other."""
    title = "Client isolation"
    tcp_ok = tcp in (OPEN, REFUSED)
    heard = {True: "beacons heard by broadcast", False: "no broadcast beacon heard"}
    parts = [
        heard.get(broadcast, "broadcast not measured") if broadcast is not None else "",
        f"UDP {discovery_port} unicast " + ("answered" if udp_unicast else "unanswered"),
        f"TCP {api_port} {tcp}",
    ]
    value = ", ".join(p for p in parts if p)
    ap = "turn off client (AP) isolation on the access point or switch, or use a wired link"
    if broadcast and not tcp_ok and not udp_unicast:
        return Result("isolation", title, Mark.FAIL, value + ": unicast blocked", ap)
    if not tcp_ok and udp_unicast:
        fix = f"on the host {host}: " + open_ports_command(host_fw, [api_port])
        return Result("isolation", title, Mark.FAIL, value + ": TCP dropped", fix)
    if not tcp_ok:
        return Result(
            "isolation",
            title,
            Mark.FAIL,
            value + ": nothing from here reaches the host",
            f"check the host is up ('lanray-tui status' there); {ap}",
        )
    if not udp_unicast:
        fix = f"on the host {host}: " + open_ports_command(host_fw, [discovery_port], "udp")
        return Result(
            "isolation",
            title,
            Mark.WARN,
            value + ": the host does not answer scans (its firewall?)",
            fix,
        )
    if broadcast is False:
        return Result(
            "isolation",
            title,
            Mark.WARN,
            value + ": broadcast filtered (client isolation) or a quiet host",
            f"join by address: lanray-tui join {host}",
        )
    return Result("isolation", title, Mark.PASS, value)


def docker(
    kind: str, reachable: str | None, nvidia: bool, gpus: int, gpu_ids: Sequence[str] = ()
) -> Result:
    """For the docker runtime: the daemon, the NVIDIA runtime, and whether a container would
    get the GPUs NVML sees. ``reachable``: None when the daemon answers, else why not."""
    title = "Docker and GPUs"
    if kind != "docker":
        return Result("docker", title, Mark.SKIP, "not the docker runtime")
    if reachable is not None:
        return Result(
            "docker",
            title,
            Mark.FAIL,
            f"dockerd: {reachable}",
            "sudo systemctl start docker   (and add yourself to the docker group)",
        )
    if gpus == 0:
        return Result("docker", title, Mark.PASS, "dockerd answers; no GPU to pass through")
    if not nvidia:
        return Result(
            "docker",
            title,
            Mark.FAIL,
            f"dockerd answers, {gpus} GPU(s), no NVIDIA runtime: containers get no GPU",
            "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker",
        )
    return Result(
        "docker",
        title,
        Mark.PASS,
        f"dockerd answers, NVIDIA runtime present: containers get {len(gpu_ids) or gpus} GPU(s)",
    )


def raw_sockets(allowed: bool, reason: str, python: str) -> Result:
    """ARP sweeps (``scan`` finding quiet hosts) need raw sockets; optional, so a warning."""
    title = "Raw sockets (ARP scan)"
    if allowed:
        return Result("raw_sockets", title, Mark.PASS, f"allowed ({reason})")
    return Result(
        "raw_sockets",
        title,
        Mark.WARN,
        reason,
        f"sudo setcap cap_net_raw+ep {python}   (or scan by address)",
    )


def host_side(ray: RayPorts, found: Mapping[int, str], own_fw: Firewall) -> Result:
    """On the host itself: which Ray ports listen here, and the command that opens them."""
    title = "Ray ports on this host"
    _, value = _port_value(ray, found)
    fix = open_ports_command(own_fw, [*ray.roles, ray.worker_range])
    return Result("host_ports", title, Mark.PASS, f"{value}; joiners need them open: {fix}")


def http_guard(view: Mapping[str, Any], from_agent: bool) -> Result:
    """Ray's plain-HTTP ports: loopback only (the agent's nftables guard), or open to the LAN
    with the command that closes them. ``from_agent``: the running agent's own word; else
    what an agent run by this user would do (no agent runs)."""
    from .guard import GuardState, GuardView

    title = "Ray's HTTP ports"
    g = GuardView.from_json(dict(view))
    if g is None:
        return Result("http_guard", title, Mark.SKIP, "the agent does not say (an older one?)")
    ports = " ".join(map(str, g.ports))
    if g.state is GuardState.ON:
        admit = "".join(
            f"; {' '.join(map(str, p))} also from the host {a}" for a, p in g.admit.items()
        )
        if from_agent:
            return Result("http_guard", title, Mark.PASS, f"{ports}: loopback only{admit}")
        value = f"no agent runs; its guard will close {ports} to the LAN"
        return Result("http_guard", title, Mark.PASS, value)
    if g.state is GuardState.OFF:
        value = f"{ports} open to the LAN: {g.reason}"
        if not from_agent:
            value = f"no agent runs; an agent run by this user leaves {value}"
        return Result("http_guard", title, Mark.WARN, value, g.fix)
    if g.state is GuardState.NOT_NEEDED:
        return Result("http_guard", title, Mark.SKIP, g.reason)
    return Result("http_guard", title, Mark.SKIP, "guarded once Ray starts")
