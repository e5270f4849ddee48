"""Issue 21 §1 in the lab: ``lanray-tui doctor`` names each simulated network fault, with its
fix line. No Ray: n1 runs tests/drivers/doctor_head.py (the real announcer, plain listeners
on Ray's ports, the real cluster API over mutual TLS with the ``probe`` op); n2 runs the
doctor. Every fault is undone in ``finally``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.core import lab as labmod
from lanray_tui.core.cluster_ca import NodeTls
from tests.conftest import LAB, needs_root
from tests.helpers.labkit import LANRAY, Node

pytestmark = needs_root
HEAD_DRIVER = Path(__file__).resolve().parents[1] / "drivers" / "doctor_head.py"
NAME = (LAB + "d")[:8]  # its own lab: the session's shared one may be up beside it
RAY_PORTS = ["6379", "6380", "6381", "6382"]  # GCS and the fixed node ports
TABLE = "lrdoctor"


def _tls_dir(lab: labmod.Lab, node: str) -> Path:
    return lab.node(node).root / "home/.local/share/lanray-tui/tls"


@pytest.fixture(scope="module")
def doclab() -> Iterator[dict[str, Any]]:
    missing = [t for t in ("nft", "bridge", "tc") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"the doctor's faults need {', '.join(missing)} (nftables, iproute2)")
    labmod.down(NAME)
    made = labmod.up(NAME, 2)
    n1, n2 = Node(made, "n1"), Node(made, "n2")
    host = NodeTls(made.node("n1").root / "head-tls")
    host.ensure_ca("d0c70d0c70d0c70d", "doctorlab")
    host.issue_own("head", [n1.address])
    heads: list[subprocess.Popen[str]] = []
    try:
        heads.append(start_head(n1, host.folder, "real"))
        yield {"lab": made, "n1": n1, "n2": n2, "host_tls": host, "heads": heads}
    finally:
        for h in heads:
            stop(h)
        labmod.down(NAME)


def start_head(n1: Node, tls: Path, ray: str, skew: float = 0.0) -> subprocess.Popen[str]:
    if ray == "real":
        from lanray_tui.adapters.ray_process import ray_version

        ray = ray_version()
    proc = n1.popen(
        [LANRAY[0], str(HEAD_DRIVER), str(tls), ray, str(skew), *RAY_PORTS],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(10)


def doctor(n2: Node, n1: Node) -> tuple[int, dict[str, dict[str, str]]]:
    p = n2.lanray("doctor", n1.address, "--json", timeout=90)
    assert p.returncode in (0, 1), p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] is (p.returncode == 0)
    return p.returncode, {c["check"]: c for c in out["checks"]}


def sh(netns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, *argv], check=True, timeout=10)


def nft(netns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        timeout=10,
    )


def nft_drop_input(netns: str, port: int) -> None:
    nft(
        netns,
        f"table inet {TABLE} {{\n"
        "  chain input { type filter hook input priority 0; policy accept;\n"
        f"    tcp dport {port} drop\n  }}\n}}\n",
    )


def nft_clear(netns: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", TABLE],
        capture_output=True,
        timeout=10,
    )


def pair(doclab: dict[str, Any]) -> None:
    """Give n2 a certificate of the head's CA, as pairing would."""
    member = NodeTls(_tls_dir(doclab["lab"], "n2"))
    csr = member.request("n2", [doclab["n2"].address])
    host: NodeTls = doclab["host_tls"]
    member.store(host.sign(csr), host.ca_cert.read_bytes())


def test_a_healthy_path_passes_and_the_back_check_waits_for_pairing(
    doclab: dict[str, Any],
) -> None:
    n1, n2 = doclab["n1"], doclab["n2"]
    shutil.rmtree(_tls_dir(doclab["lab"], "n2"), ignore_errors=True)
    code, checks = doctor(n2, n1)
    assert code == 0, checks
    assert checks["ports_from_host"]["mark"] == "skip"
    assert checks["ports_from_host"]["value"].startswith("not available before pairing")
    pair(doclab)
    text = n2.lanray("doctor", n1.address, timeout=90)
    print(text.stdout)
    assert text.returncode == 0, text.stdout + text.stderr
    code, checks = doctor(n2, n1)
    assert code == 0, checks
    for key in ("interface", "ports_to_host", "ports_from_host", "versions", "clock"):
        assert checks[key]["mark"] == "pass", checks[key]
    for key in ("mtu", "loss", "isolation"):
        assert checks[key]["mark"] == "pass", checks[key]
    assert checks["interface"]["value"] == f"eth0 {n2.address} (wired)"
    assert "open 6379 6380 6381 6382" in checks["ports_to_host"]["value"]
    assert "open 6380 6381 6382" in checks["ports_from_host"]["value"]
    assert checks["mtu"]["value"] == "eth0 1500, path 1500"
    assert checks["docker"]["value"] == "not the docker runtime"
    assert checks["raw_sockets"]["mark"] == "pass"


def test_a_port_dropped_each_way_is_named_with_its_fix(doclab: dict[str, Any]) -> None:
    """6380 dropped on the head's input (this node -> host) and 6381 on the joiner's (host ->
    this node, the ``probe`` op): each named, the joiner's fix written for its own nft chain,
    and that fix, applied, clears it."""
    lab, n1, n2 = doclab["lab"], doclab["n1"], doclab["n2"]
    head_ns, node_ns = lab.node("n1").netns, lab.node("n2").netns
    pair(doclab)
    try:
        nft_drop_input(head_ns, 6380)
        nft_drop_input(node_ns, 6381)
        code, checks = doctor(n2, n1)
        assert code == 1
        to_host, back = checks["ports_to_host"], checks["ports_from_host"]
        assert (
            to_host["mark"] == "fail" and "6380 node manager: dropped: timeout" in to_host["value"]
        )
        assert "6381" not in to_host["value"].split(";")[0]
        rule = "sudo nft insert rule inet filter input tcp dport 6380 accept"
        assert to_host["fix"] == f"on the host {n1.address}: {rule}"
        assert back["mark"] == "fail"
        assert back["value"].startswith("6381 object manager: dropped: timeout"), back
        assert back["fix"] == f"sudo nft insert rule inet {TABLE} input tcp dport 6381 accept"
        sh(node_ns, *back["fix"].removeprefix("sudo ").split())
        _, checks = doctor(n2, n1)
        assert checks["ports_from_host"]["mark"] == "pass", checks["ports_from_host"]
        assert checks["ports_to_host"]["mark"] == "fail"
    finally:
        nft_clear(head_ns)
        nft_clear(node_ns)


def test_client_isolation_is_named(doclab: dict[str, Any]) -> None:
    """Bridge port isolation (nothing passes between the two ports), then an access point that
    passes broadcast but drops the clients' unicast."""
    lab, n1, n2 = doclab["lab"], doclab["n1"], doclab["n2"]
    br = lab.bridge_netns
    try:
        for port in ("n1", "n2"):
            sh(br, "bridge", "link", "set", "dev", port, "isolated", "on")
        code, checks = doctor(n2, n1)
        assert code == 1
        iso = checks["isolation"]
        assert iso["mark"] == "fail" and "nothing from here reaches the host" in iso["value"]
        assert "client (AP) isolation" in iso["fix"]
    finally:
        for port in ("n1", "n2"):
            sh(br, "bridge", "link", "set", "dev", port, "isolated", "off")
    try:
        nft(
            br,
            f"table bridge {TABLE} {{\n"
            "  chain isolate { type filter hook forward priority 0; policy accept;\n"
            '    iifname "n2" ether daddr != ff:ff:ff:ff:ff:ff drop\n  }\n}\n',
        )
        code, checks = doctor(n2, n1)
        iso = checks["isolation"]
        assert code == 1
        assert iso["mark"] == "fail", iso
        assert iso["value"].startswith("beacons heard by broadcast, UDP 47474 unicast unanswered")
        assert iso["value"].endswith("unicast blocked")
        assert iso["fix"].startswith("turn off client (AP) isolation")
    finally:
        subprocess.run(
            ["ip", "netns", "exec", br, "nft", "delete", "table", "bridge", TABLE],
            capture_output=True,
            timeout=10,
        )


def test_a_lowered_mtu_on_the_path_is_named(doclab: dict[str, Any]) -> None:
    lab, n1, n2 = doclab["lab"], doclab["n1"], doclab["n2"]
    try:
        sh(lab.bridge_netns, "ip", "link", "set", "dev", "n1", "mtu", "1200")
        code, checks = doctor(n2, n1)
        mtu = checks["mtu"]
        assert code == 1 and mtu["mark"] == "fail", mtu
        path = int(mtu["value"].split("path ")[1].split(":")[0])
        assert path == 1200, mtu  # the largest IP packet the 1200-byte port passes
        assert mtu["fix"].startswith(f"sudo ip link set dev eth0 mtu {path}")
    finally:
        sh(lab.bridge_netns, "ip", "link", "set", "dev", "n1", "mtu", "1500")


def test_packet_loss_is_named(doclab: dict[str, Any]) -> None:
    """30 % of the head's packets lost: ``tc netem`` where the kernel has it, else the same
    random drop with nftables (``numgen random``; this project's VM kernel has no sch_netem)."""
    lab, n1, n2 = doclab["lab"], doclab["n1"], doclab["n2"]
    ns = lab.node("n1").netns
    netem = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem"]
    with_netem = subprocess.run([*netem, "loss", "30%"], capture_output=True, timeout=10)
    try:
        if with_netem.returncode != 0:
            assert b"qdisc kind is unknown" in with_netem.stderr, with_netem.stderr
            nft(
                ns,
                f"table inet {TABLE} {{\n"
                "  chain output { type filter hook output priority 0; policy accept;\n"
                "    numgen random mod 100 < 30 drop\n  }\n}\n",
            )
        code, checks = doctor(n2, n1)
        loss = checks["loss"]
        assert code == 1 and loss["mark"] == "fail", loss
        lost = int(loss["value"].split("(")[1].split()[0])
        assert 2 <= lost < 30, loss
        fix = "ip -s link show dev eth0   (errors and drops; a cable or Wi-Fi signal problem)"
        assert loss["fix"] == fix
    finally:
        if with_netem.returncode == 0:
            sh(ns, "tc", "qdisc", "del", "dev", "eth0", "root")
        nft_clear(ns)


def test_another_ray_version_and_a_far_clock_are_named(doclab: dict[str, Any]) -> None:
    n1, n2, heads = doclab["n1"], doclab["n2"], doclab["heads"]
    stop(heads.pop())
    try:
        heads.append(start_head(n1, doclab["host_tls"].folder, "2.59.0", skew=-45.0))
        code, checks = doctor(n2, n1)
        assert code == 1
        ver, clock = checks["versions"], checks["clock"]
        assert ver["mark"] == "fail" and "host Ray 2.59.0" in ver["value"]
        assert ver["fix"] == "pip install 'ray[default]==2.59.0'"
        assert clock["mark"] == "fail" and clock["value"].startswith("+45."), clock
        assert clock["fix"].startswith("sudo timedatectl set-ntp true")
    finally:
        stop(heads.pop())
        time.sleep(0.2)
        heads.append(start_head(n1, doclab["host_tls"].folder, "real"))


def test_the_real_host_agent_dials_back(doclab: dict[str, Any]) -> None:
    """The real ``lanray-tui host`` (its agent and Ray) in place of the driver: n2, holding a
    certificate of that host's CA (signed here, as pairing does), gets its dropped port named
    by the agent's ``probe`` op. Last in this file: the driver stays stopped."""
    lab, n1, n2, heads = doclab["lab"], doclab["n1"], doclab["n2"], doclab["heads"]
    while heads:
        stop(heads.pop())
    node_ns = lab.node("n2").netns
    n1.lanray("host", "--headless", "--detach", check=True, timeout=180)
    try:
        ca = NodeTls(lab.node("n1").root / "home/.local/share/lanray-tui/tls")
        member = NodeTls(_tls_dir(lab, "n2"))
        member.store(ca.sign(member.request("n2", [n2.address])), ca.ca_cert.read_bytes())
        nft_drop_input(node_ns, 6381)
        code, checks = doctor(n2, n1)
        assert code == 1
        back = checks["ports_from_host"]
        assert back["mark"] == "fail", back
        assert back["value"].startswith("6381 object manager: dropped: timeout; open 6380"), back
        assert back["fix"] == f"sudo nft insert rule inet {TABLE} input tcp dport 6381 accept"
        assert checks["ports_to_host"]["mark"] == "pass"  # the real head's Ray listens
        assert "open 6379 6380 6381 6382" in checks["ports_to_host"]["value"]
    finally:
        nft_clear(node_ns)
        n1.leave()
