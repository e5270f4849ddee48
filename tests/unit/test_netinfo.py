"""Which address a joining node gives Ray: never a bridge's for a native node, while a container
on a named Docker network (with an address of its own) may reach the head through its bridge."""

from __future__ import annotations

from pathlib import Path

import pytest

from lanray_tui.adapters.system import Interface
from lanray_tui.core import config, credentials, netinfo
from lanray_tui.core.agent.node import Agent, Wiring
from lanray_tui.core.cluster_ca import NodeTls
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.errors import LanrayError

HEAD = "10.77.0.2"
BRIDGE = Interface("br-5c1d2e3f4a5b", "172.18.0.1", "255.255.0.0", "172.18.255.255", True)
DOCKER0 = Interface("docker0", "172.17.0.1", "255.255.0.0", "172.17.255.255", True)
LAN = Interface("eth0", "10.77.0.5", "255.255.255.0", "10.77.0.255", True)
LAN_DOWN = Interface("eth0", "10.77.0.5", "255.255.255.0", "10.77.0.255", False)


@pytest.mark.parametrize(
    ("iface", "own_address", "refused"),
    [
        (BRIDGE, False, True),  # a native node behind a Docker bridge: nobody could reach it
        (DOCKER0, False, True),
        (LAN_DOWN, False, True),
        (BRIDGE, True, False),  # the container takes its own address on that network
        (DOCKER0, True, False),
        (LAN, False, False),
        (LAN, True, False),
        (None, False, False),  # an address no interface lists: nothing to judge it by
    ],
)
def test_route_refusal(iface: Interface | None, own_address: bool, refused: bool) -> None:
    src = iface.address if iface else "192.168.9.9"
    why = netinfo.route_refusal(HEAD, src, iface, own_address)
    assert (why is not None) == refused
    if why is not None and iface is not None:
        assert iface.name in why and src in why and "ray.node_ip" in why and "\n" not in why


def route_through(monkeypatch: pytest.MonkeyPatch, iface: Interface) -> None:
    """The routing table's answer (the one thing a test cannot set up without root)."""
    monkeypatch.setattr(netinfo, "route_source", lambda dest, port=9: iface.address)
    monkeypatch.setattr(netinfo.system, "ipv4_interfaces", lambda: [LAN, iface])


def test_ip_for_head_through_a_bridge(monkeypatch: pytest.MonkeyPatch) -> None:
    route_through(monkeypatch, BRIDGE)
    with pytest.raises(LanrayError, match=r"goes through br-5c1d2e3f4a5b \(172\.18\.0\.1\)"):
        netinfo.ip_for_head(HEAD)
    assert netinfo.ip_for_head(HEAD, own_address=True) == BRIDGE.address


@pytest.mark.parametrize(
    ("runtime", "network", "joins"),
    [
        ("docker", "lanray-net", True),
        ("docker", "bridge", True),
        ("docker", "host", False),  # the host's network: Ray takes the host's address
        ("native", "", False),
    ],
)
def test_a_joining_agent_on_a_named_docker_network_is_not_refused(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, runtime: str, network: str, joins: bool
) -> None:
    cfg = config.load().with_overrides(runtime__kind=runtime, runtime__docker_network=network)
    paths = cfg.paths()
    credentials.save(paths.credentials, Credentials.new("lab").replace(head_address=HEAD))
    ca = NodeTls(isolated_home / "ca")
    ca.ensure_ca("c0ffee", "lab")
    member = NodeTls(paths.tls_dir)
    member.store(ca.sign(member.request("w", [BRIDGE.address])), ca.ca_cert.read_bytes())
    route_through(monkeypatch, BRIDGE)
    agent = Agent(cfg, "worker", paths)
    if joins:
        wiring = Wiring(agent)
        assert wiring.node.node_ip == BRIDGE.address  # until the container's own address
    else:
        with pytest.raises(LanrayError, match="not a LAN interface"):
            Wiring(agent)
