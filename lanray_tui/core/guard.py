"""The guard on Ray's plain-HTTP ports: loopback only, by a firewall table of our own.

Ray 2.60 serves HTTP in clear on every node's LAN address and has no setting that moves it
to loopback: the dashboard agent (its Jobs endpoint starts a job with the cluster token),
the runtime-env agent, and the metrics exporters (on the head also the dashboard's and the
autoscaler's). Ray itself uses them across machines for one thing only: the head's dashboard
reads the log of a job whose driver runs on another node (a job that asks for CPUs or GPUs
may run anywhere) from that node's dashboard agent. Everything else is a node talking to
itself: to its own LAN address, which arrives on ``lo``.

So while the agent runs Ray it keeps one nftables table, ``inet lanray_guard``: TCP to those
ports that did not arrive on loopback gets a reset, except, on a joined node, from the host's
address to the dashboard agent. The table goes when Ray stops or the agent exits. Without
root or CAP_NET_ADMIN, or without ``nft``, nothing changes and the agent says why, with the
command that sets the same table by hand.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..adapters import nftables

if TYPE_CHECKING:
    from ..adapters.ray_process import RayHandle

log = logging.getLogger("lanray.guard")

TABLE = nftables.OWN_PREFIX + "guard"

#: The config keys of Ray's plain-HTTP ports. The agent's port (first) is the one the host
#: reaches on joined nodes; the dashboard's own listens on loopback already (kept here so
#: that it stays closed whatever Ray does with it).
HTTP_PORT_KEYS = (
    "ray.dashboard_agent_listen_port",
    "ray.runtime_env_agent_port",
    "ray.metrics_export_port",
    "ray.dashboard_port",
    "ray.dashboard_metrics_port",
    "ray.autoscaler_metrics_port",
)


class GuardState(enum.Enum):
    PENDING = "pending"  # set when Ray starts
    ON = "on"
    OFF = "off"  # wanted, but this agent cannot set it: ``reason`` and ``fix``
    NOT_NEEDED = "not needed"  # nothing of Ray listens on a LAN here


@dataclass(frozen=True)
class GuardView:
    """The guard as ``status``, the doctor and the logs tell it (one JSON record)."""

    state: GuardState
    ports: tuple[int, ...] = ()
    admit: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    reason: str = ""
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "table": f"{nftables.FAMILY} {TABLE}",
            "ports": list(self.ports),
            "admit": {a: list(p) for a, p in self.admit.items()},
            "reason": self.reason,
            "fix": self.fix,
        }

    @classmethod
    def from_json(cls, d: object) -> GuardView | None:
        """A node's guard as its agent sent it; None when it sent none (an older agent)."""
        if not isinstance(d, dict):
            return None
        try:
            state = GuardState(d.get("state"))
        except ValueError:
            return None
        got = d.get("admit")
        admit: dict[Any, Any] = got if isinstance(got, dict) else {}
        return cls(
            state,
            tuple(int(p) for p in d.get("ports") or () if isinstance(p, int)),
            {
                str(a): tuple(p for p in ps if isinstance(p, int))
                for a, ps in admit.items()
                if isinstance(ps, list)
            },
            str(d.get("reason") or ""),
            str(d.get("fix") or ""),
        )

    def line(self) -> str:
        """One line: what is open or closed, and why; "" while pending."""
        ports = ", ".join(map(str, self.ports))
        if self.state is GuardState.ON:
            out = f"Ray's HTTP ports {ports} take loopback only ({nftables.FAMILY} {TABLE})"
            for address, allowed in self.admit.items():
                out += f", and {', '.join(map(str, allowed))} the host {address}"
            return out
        if self.state is GuardState.OFF:
            return f"Ray's HTTP ports {ports} are open to the LAN: {self.reason}"
        if self.state is GuardState.NOT_NEEDED:
            return f"Ray's HTTP ports are not guarded: {self.reason}"
        return ""

    def warning(self) -> str:
        """The line and the command that closes the ports, when they are open; else ""."""
        if self.state is not GuardState.OFF:
            return ""
        return f"{self.line()}; to close them: {self.fix}" if self.fix else self.line()


def http_ports(get: Callable[[str], Any]) -> tuple[int, ...]:
    """Ray's plain-HTTP ports from the config (``get`` reads a dotted key)."""
    return tuple(sorted({int(get(k)) for k in HTTP_PORT_KEYS}))


def admitted(get: Callable[[str], Any], head: bool, head_address: str) -> dict[str, tuple[int]]:
    """Who may reach this node's ports from the LAN: on a joined node, the host's address,
    its dashboard agent (for the log of a job whose driver runs here)."""
    if head:
        return {}
    try:
        ipaddress.IPv4Address(head_address)
    except ValueError:
        return {}
    return {head_address: (int(get(HTTP_PORT_KEYS[0])),)}


def commands(get: Callable[[str], Any], head: bool, head_address: str) -> list[str]:
    """The ``nft`` commands that set the guard on this node."""
    return nftables.input_guard(TABLE, http_ports(get), admitted(get, head, head_address))


def not_needed(get: Callable[[str], Any], node_ip: str) -> str:
    """Why no guard is needed here ("" when it is)."""
    if os.environ.get("LANRAY_NO_LAN") == "1":
        # the test suite's root namespace: its firewall is never touched
        return "LANRAY_NO_LAN=1: nothing of Ray is on a LAN"
    if node_ip and ipaddress.IPv4Address(node_ip).is_loopback:
        return "Ray runs on loopback only"
    return ""


def unreachable(get: Callable[[str], Any]) -> str:
    """Why a rule on this machine's input cannot reach Ray's ports ("" when it can)."""
    network = get("runtime.docker_network") or "host"
    if get("runtime.kind") == "docker" and network != "host":
        return (
            f"Ray runs in a container on the Docker network '{network}', which this "
            "machine's input rules do not see (set runtime.docker_network: host)"
        )
    return ""


def plan(
    get: Callable[[str], Any],
    head: bool,
    node_ip: str,
    head_address: str,
    setter: Callable[[list[str]], str],
) -> GuardView:
    """The guard this node gets: ``setter`` sets the commands and says why it could not
    ("" when done). The agent passes :func:`nftables.apply`; the doctor :func:`preview`, a
    setter that changes nothing."""
    ports = http_ports(get)
    skip = not_needed(get, node_ip)
    if skip:
        return GuardView(GuardState.NOT_NEEDED, ports, reason=skip)
    admit = admitted(get, head, head_address)
    cmds = commands(get, head, head_address)
    why = unreachable(get) or setter(cmds)
    if why:
        return GuardView(GuardState.OFF, ports, admit, why, nftables.command_line(cmds))
    return GuardView(GuardState.ON, ports, admit)


def preview(get: Callable[[str], Any], head: bool, node_ip: str, head_address: str) -> GuardView:
    """The guard an agent run by this user would set, changing nothing (for the doctor when
    no agent runs)."""
    return plan(get, head, node_ip, head_address, lambda _cmds: nftables.permission())


def remove_left() -> None:
    """Take away a table that an agent which is gone left behind (``leave --force``), when
    this process may; never raises. Nothing under LANRAY_NO_LAN=1 (the suite's root
    namespace)."""
    if os.environ.get("LANRAY_NO_LAN") == "1" or nftables.permission():
        return
    why = nftables.remove(TABLE)
    if why:
        log.warning("the guard on Ray's HTTP ports stays: %s", why)


class PortGuard:
    """This node's guard: set before Ray starts, removed when it stops or the agent exits."""

    def __init__(self, get: Callable[[str], Any]) -> None:
        self.get = get
        self.view = GuardView(GuardState.PENDING, http_ports(get))

    def apply(self, head: bool, node_ip: str, head_address: str) -> GuardView:
        """Set the guard (again: the table is replaced whole); never raises."""
        return self._tell(plan(self.get, head, node_ip, head_address, nftables.apply))

    def remove(self) -> None:
        """Take the table away, if this agent set it."""
        if self.view.state is not GuardState.ON:
            return
        why = nftables.remove(TABLE)
        if why:
            log.warning("the guard on Ray's HTTP ports stays: %s", why)
            return
        log.info("removed the guard on Ray's HTTP ports")
        self.view = GuardView(GuardState.PENDING, self.view.ports)

    def around(self, ray: RayHandle) -> GuardedRay:
        return GuardedRay(ray, self)

    def _tell(self, view: GuardView) -> GuardView:
        if view != self.view:
            if view.state is GuardState.OFF:
                log.warning("%s", view.warning())
            else:
                log.info("%s", view.line())
        self.view = view
        return view


class GuardedRay:
    """A Ray handle whose ``stop`` also takes the guard away (Ray is gone: nothing to guard)."""

    def __init__(self, ray: RayHandle, guard: PortGuard) -> None:
        self.ray, self.guard = ray, guard
        # what the agent's parts read with getattr: adopted, and a container's address and name
        self.adopted = bool(getattr(ray, "adopted", False))
        self.node_ip = str(getattr(ray, "node_ip", "") or "")
        self.name = str(getattr(ray, "name", "") or "")

    @property
    def pid(self) -> int:
        return self.ray.pid

    @property
    def returncode(self) -> int | None:
        return self.ray.returncode

    def poll(self) -> int | None:
        return self.ray.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.ray.wait(timeout)

    def stop(self) -> int | None:
        try:
            return self.ray.stop()
        finally:
            self.guard.remove()
