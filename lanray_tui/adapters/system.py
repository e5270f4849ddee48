"""psutil behind one small interface: interfaces, machine size, process trees."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Interface:
    """One IPv4 address of one network interface."""

    name: str
    address: str
    netmask: str
    broadcast: str | None
    is_up: bool


def ipv4_interfaces() -> list[Interface]:
    """Every IPv4 address on this machine (in this network namespace)."""
    stats = psutil.net_if_stats()
    out: list[Interface] = []
    for name, addrs in psutil.net_if_addrs().items():
        up = bool(stats.get(name) and stats[name].isup)
        for a in addrs:
            if a.family == socket.AF_INET and a.netmask:
                out.append(Interface(name, a.address, a.netmask, a.broadcast, up))
    return out


def cpu_count() -> int:
    return psutil.cpu_count(logical=True) or 1


def total_memory_bytes() -> int:
    return int(psutil.virtual_memory().total)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (empty if it is gone)."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def terminate_tree(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM ``pid``, wait up to ``grace_s``, then SIGKILL it and every process it left.

    ``ray start --block`` stops its own processes on SIGTERM but leaves the dashboard's
    forkserver children behind, so the tree is captured first and swept afterwards.
    """
    tree = descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    tree += descendants(pid)
    for p in [pid, *tree]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    procs = []
    for p in tree:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(p))
    psutil.wait_procs(procs, timeout=5)
