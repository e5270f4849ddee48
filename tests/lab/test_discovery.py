"""Issue 3 in the lab: scan, ARP, pairing with codes, forged beacons, token-only Jobs API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_root
from tests.helpers.labkit import LANRAY, Node, node_states, wait_for

pytestmark = needs_root
FORGER = Path(__file__).resolve().parents[1] / "drivers" / "forger.py"


def scan(node: Node, *args: str) -> dict[str, Any]:
    p = node.lanray("scan", "--json", "--timeout", "1.5", *args, check=True)
    return json.loads(p.stdout)  # type: ignore[no-any-return]


def code_of(host: Node) -> str:
    return host.lanray("code", check=True).stdout.split()[-1]


def test_scan_finds_the_host_from_two_nodes(nodes: dict[str, Any]) -> None:
    n1 = nodes["n1"]
    info = n1.status()["agent"]
    for scanner in (nodes["n2"], nodes["n3"]):
        found = scan(scanner)
        hosts = [h for h in found["hosts"] if h["address"] == n1.address]
        assert len(hosts) == 1, found
        h = hosts[0]
        assert h["cluster_name"] == info["cluster_name"] and h["cluster_id"] == info["cluster_id"]
        assert h["ray_version"] == info["ray_version"]
        assert h["python_version"].count(".") == 1
        assert h["compatible"] is True and h["why_not"] == ""
        assert h["interface"] == "eth0"
        assert h["gcs_port"] == 6379 and h["node_count"] >= 1
        assert any("ARP swept" in note for note in found["notes"]), found["notes"]
    human = nodes["n3"].lanray("scan", "--timeout", "1", check=True).stdout
    assert n1.address in human and "eth0" in human


def test_wrong_codes_are_refused_without_burning_the_code(nodes: dict[str, Any]) -> None:
    """Wrong guesses cost the guesser, not the owner: the code stays; after three from one
    address that address is refused (even with the right code) until the owner issues a new
    code; the host says who tried."""
    n1, n3 = nodes["n1"], nodes["n3"]
    first = code_of(n1)
    wrong = "1-tiger-canvas" if first != "1-tiger-canvas" else "2-tiger-canvas"
    for _ in range(3):
        p = n3.lanray("join", n1.address, "--code", wrong, "--headless", "--detach")
        assert p.returncode == 1, p.stdout
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "wrong join code" in lines[0], p.stderr
        assert not n3.agent_running()
        assert code_of(n1) == first  # not burned
    p = n3.lanray("join", n1.address, "--code", first, "--headless", "--detach")
    assert p.returncode == 1 and "too many failed attempts" in p.stderr
    assert not n3.agent_running()
    status = n1.status()
    assert status["pairing"]["pairing_summary"] == f"3 failed pairing attempts from {n3.address}"
    assert f"3 failed pairing attempts from {n3.address}" in n1.lanray("status").stdout
    fresh = n1.lanray("code", "--minutes", "10", check=True).stdout.split()[-1]
    assert fresh != first  # the owner's new code opens pairing again


def test_right_code_joins_and_later_joins_need_no_code(nodes: dict[str, Any]) -> None:
    n1, n3 = nodes["n1"], nodes["n3"]
    p = n3.lanray("join", "--code", code_of(n1), "--headless", "--detach", timeout=180)
    assert p.returncode == 0, p.stderr
    assert node_states(n1)[n3.address] == "ALIVE"
    creds = Path(n3.lab.node("n3").root) / "home/.local/share/lanray-tui/cluster.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    n3.leave()
    wait_for(lambda: node_states(n1).get(n3.address) == "DEAD", timeout=30)
    p = n3.lanray("join", "--headless", "--detach", timeout=180)  # no code, no token
    assert p.returncode == 0, p.stderr
    assert node_states(n1)[n3.address] == "ALIVE"
    n3.leave()


def test_forged_beacon_is_flagged(nodes: dict[str, Any]) -> None:
    n1, n2, n3 = nodes["n1"], nodes["n2"], nodes["n3"]
    # n3 paired in the test above, so it holds the cluster key
    cluster_id = n1.status()["agent"]["cluster_id"]
    forger = n2.popen([LANRAY[0], str(FORGER), cluster_id, n2.address, "8"], stdout=subprocess.PIPE)
    try:
        assert forger.stdout is not None and forger.stdout.readline().strip() == "ready"
        found = {h["address"]: h for h in scan(n3, "--no-arp")["hosts"]}
        assert found[n2.address]["verified"] == "forged"
        assert found[n1.address]["verified"] == "verified"
        p = n3.lanray("join", n2.address, "--code", "5-tiger-canvas", "--headless", "--detach")
        assert p.returncode == 1 and "forged" in p.stderr and not n3.agent_running()
    finally:
        forger.kill()
        forger.wait(10)


def _jobs_api(node: Any, address: str, token: str | None) -> str:
    """What Ray's Jobs API at ``address`` answers ``node``: an HTTP code, or why none."""
    header = f"'Authorization': 'Bearer {token}'" if token else ""
    script = (
        "import urllib.request, urllib.error\n"
        f"r = urllib.request.Request('http://{address}:8265/api/jobs/', headers={{{header}}})\n"
        "try:\n    urllib.request.urlopen(r, timeout=10); print(200)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
        "except OSError as e:\n    print('no answer:', type(e).__name__)\n"
    )
    p = node.run([LANRAY[0], "-c", script], check=True, timeout=60)
    return str(p.stdout.strip())


@pytest.mark.parametrize(("token", "code"), [(None, "401"), ("0" * 64, "403")])
def test_jobs_api_needs_the_token_on_the_heads_loopback(
    nodes: dict[str, Any], token: str | None, code: str
) -> None:
    assert _jobs_api(nodes["n1"], "127.0.0.1", token) == code


def test_jobs_api_gives_no_answer_on_the_lan(nodes: dict[str, Any]) -> None:
    """Another node, even with the right token, gets no answer on the head's LAN address."""
    n1, n3 = nodes["n1"], nodes["n3"]
    assert _jobs_api(n3, n1.address, n1.token()).startswith("no answer")


def test_arp_finds_a_quiet_host(nodes: dict[str, Any], tmp_path: Path) -> None:
    """A host that neither beacons nor answers broadcasts is found only by the ARP path."""
    n2, n3 = nodes["n2"], nodes["n3"]
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text("cluster_name: quiet\ndiscovery:\n  broadcast: false\n")
    n3.lanray("--config", str(quiet), "host", "--headless", "--detach", check=True, timeout=180)
    try:
        plain = scan(n2, "--no-arp")
        assert n3.address not in {h["address"] for h in plain["hosts"]}
        found = {h["address"]: h for h in scan(n2)["hosts"]}
        assert found[n3.address]["cluster_name"] == "quiet"
    finally:
        n3.leave()


def test_beacons_arrive_without_a_query(nodes: dict[str, Any]) -> None:
    """Passive listeners (the TUI's live list) hear the host's once-a-second beacon."""
    n1, n2 = nodes["n1"], nodes["n2"]
    script = (
        "import socket\nfrom lanray_tui.core import beacon\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 47474)); s.settimeout(3)\n"
        "while True:\n"
        "    data, peer = s.recvfrom(2048); d = beacon.decode(data)\n"
        "    if d and d.kind == 'beacon':\n"
        "        print(peer[0], d.mac is not None); break\n"
    )
    p = n2.run([LANRAY[0], "-c", script], check=True, timeout=30)
    assert p.stdout.split() == [n1.address, "True"]
