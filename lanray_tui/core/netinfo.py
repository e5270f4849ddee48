"""Which address this node gives Ray: never loopback, docker0/veth or link-local on a LAN."""

from __future__ import annotations

import ipaddress
import os
import socket

from ..adapters import system
from .errors import LanrayError

# Interfaces that are never the LAN: container bridges and virtual ends.
_VIRTUAL_PREFIXES = ("docker", "veth", "br-", "virbr", "cni", "flannel", "lo")


def usable(iface: system.Interface) -> bool:
    """An interface address a LAN peer could reach us on."""
    ip = ipaddress.IPv4Address(iface.address)
    return (
        iface.is_up
        and not ip.is_loopback
        and not ip.is_link_local
        and not iface.name.startswith(_VIRTUAL_PREFIXES)
    )


def lan_interfaces() -> list[system.Interface]:
    """Usable IPv4 interfaces, in the order the system lists them.

    ``LANRAY_NO_LAN=1`` hides them all: nothing is broadcast, swept or bound on the LAN (the
    test suite sets it outside its lab namespaces, so it never touches the real network).
    """
    if os.environ.get("LANRAY_NO_LAN") == "1":
        return []
    return [i for i in system.ipv4_interfaces() if usable(i)]


def route_source(dest: str, port: int = 9) -> str | None:
    """The local address the kernel would use to reach ``dest`` (sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((dest, port))
            return str(s.getsockname()[0])
    except OSError:
        return None


def resolve_ipv4(host: str) -> str:
    """``host`` as an IPv4 address, or a one-line error."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        raise LanrayError(f"cannot resolve '{host}' to an IPv4 address") from None


def route_refusal(
    head_ip: str, src: str, iface: system.Interface | None, own_address: bool = False
) -> str | None:
    """Why ``src`` (reached through ``iface``) is no address to give Ray, or None when it is.

    A native node must not hand Ray a container bridge's or a virtual interface's address:
    nobody on the LAN could reach it. When the runtime gives Ray an address of its own (a
    container on a named Docker network, ``own_address``), the route only says how the agent
    reaches the head, and a bridge on the way is what that network is.
    """
    if own_address or iface is None or usable(iface):
        return None
    return (
        f"the route to {head_ip} goes through {iface.name} ({src}), which is not a LAN "
        "interface; set ray.node_ip in the config"
    )


def ip_for_head(head: str, own_address: bool = False) -> str:
    """The address a joining node gives Ray: the one of the interface that reaches ``head``
    (with ``own_address``, the runtime replaces it with the container's own address)."""
    head_ip = resolve_ipv4(head)
    if ipaddress.IPv4Address(head_ip).is_loopback:
        return "127.0.0.1"  # a single-machine cluster: everything on loopback
    src = route_source(head_ip)
    if src is None:
        raise LanrayError(f"no route from this machine to {head_ip}: is the LAN cable plugged in?")
    by_addr = {i.address: i for i in system.ipv4_interfaces()}
    refusal = route_refusal(head_ip, src, by_addr.get(src), own_address)
    if refusal:
        raise LanrayError(refusal)
    return src


def ip_for_host() -> str:
    """The address a host gives its Ray head: the default route's interface, else the first
    LAN interface; loopback only when the machine has no LAN interface at all."""
    lan = lan_interfaces()
    if not lan:
        return "127.0.0.1"
    default_src = route_source("192.0.2.1")  # TEST-NET-1: only asks the routing table
    for i in lan:
        if i.address == default_src:
            return i.address
    return lan[0].address
