"""ARP sweeps with scapy: the one module that imports it (slow to import, so lazily)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    allowed: bool
    reason: str


def permission() -> Permission:
    """Raw sockets need root or CAP_NET_RAW (bit 13 of the effective capabilities)."""
    if os.geteuid() == 0:
        return Permission(True, "root")
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:") and int(line.split()[1], 16) & (1 << 13):
                    return Permission(True, "CAP_NET_RAW")
    except (OSError, ValueError):
        pass
    return Permission(False, "ARP scan skipped: it needs root or CAP_NET_RAW")


def load() -> None:
    """Import scapy's layers: about half a second, once per process (a scan does it in its
    sweep thread, beside the broadcast query)."""
    import logging

    logging.getLogger("scapy").setLevel(logging.ERROR)
    import scapy.layers.l2
    import scapy.sendrecv  # noqa: F401


def sweep(iface: str, cidr: str, timeout: float = 0.5) -> list[str]:
    """Addresses in ``cidr`` that answer an ARP who-has on ``iface``."""
    load()
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp

    answered, _ = srp(
        Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=cidr), iface=iface, timeout=timeout, verbose=False
    )
    return sorted({str(rcv.psrc) for _, rcv in answered})
