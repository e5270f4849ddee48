"""The network doctor: its verdicts and fix lines from injected measurements (ufw, firewalld,
nft, iptables), its probes on loopback, and the host's dial-back over a real mutual-TLS
cluster API (the lab test does the same between two network namespaces)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.adapters import netprobe, nftables
from lanray_tui.cli import main
from lanray_tui.core import doctor, doctor_run
from lanray_tui.core.agent.control_server import ControlServer
from lanray_tui.core.agent.member_ops import MemberOps
from lanray_tui.core.cluster_ca import NodeTls
from lanray_tui.core.config import load
from lanray_tui.core.doctor import Firewall, Mark

DEFAULTS = {
    "ray.gcs_port": 6379,
    "ray.object_manager_port": 6381,
    "ray.node_manager_port": 6380,
    "ray.dashboard_agent_grpc_port": 6382,
    "ray.min_worker_port": 10002,
    "ray.max_worker_port": 10100,
}
HEAD = doctor.RayPorts.from_config(DEFAULTS.__getitem__, head=True)
NODE = doctor.RayPorts.from_config(DEFAULTS.__getitem__, head=False)
UFW, FIREWALLD, NFT = Firewall("ufw"), Firewall("firewalld"), Firewall("nft", "inet fw", "in")


def all_open(ray: doctor.RayPorts, **changes: str) -> dict[int, str]:
    found = {
        p: doctor.OPEN if role != "worker" else doctor.REFUSED for p, role in ray.roles.items()
    }
    found.update({int(k.removeprefix("p")): v for k, v in changes.items()})
    return found


# ----- fix lines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fw", "expected"),
    [
        (UFW, "sudo ufw allow 6380,10002:10100/tcp"),
        (
            FIREWALLD,
            "sudo firewall-cmd --permanent --add-port=6380/tcp --add-port=10002-10100/tcp"
            " && sudo firewall-cmd --reload",
        ),
        (NFT, "sudo nft insert rule inet fw in tcp dport { 6380, 10002-10100 } accept"),
        (
            Firewall("iptables"),
            "sudo iptables -I INPUT -p tcp -m multiport --dports 6380,10002:10100 -j ACCEPT",
        ),
        (Firewall(""), "let TCP in on ports 6380, 10002-10100 in this machine's firewall"),
    ],
)
def test_the_fix_is_written_for_each_firewall_tool(fw: Firewall, expected: str) -> None:
    assert doctor.open_ports_command(fw, [10051, 6380, (10002, 10100), 10100]) == expected


def test_udp_for_the_discovery_port() -> None:
    assert doctor.open_ports_command(NFT, [47474], "udp") == (
        "sudo nft insert rule inet fw in udp dport 47474 accept"
    )
    assert doctor.open_ports_command(FIREWALLD, [47474], "udp").startswith(
        "sudo firewall-cmd --permanent --add-port=47474/udp"
    )


def test_one_port_and_merged_spans() -> None:
    assert doctor.open_ports_command(NFT, [6380]) == (
        "sudo nft insert rule inet fw in tcp dport 6380 accept"
    )
    assert doctor.spans([6381, 6379, 6380, (6383, 6384)]) == [(6379, 6381), (6383, 6384)]


# ----- ports ---------------------------------------------------------------------------------


def test_the_ports_come_from_the_config_with_a_sample_of_the_worker_range() -> None:
    assert HEAD.roles == {
        6379: "GCS",
        6381: "object manager",
        6380: "node manager",
        6382: "dashboard agent",
        10002: "worker",
        10051: "worker",
        10100: "worker",
    }
    assert 6379 not in NODE.roles and NODE.worker_range == (10002, 10100)
    real = doctor.RayPorts.from_config(load().__getitem__, head=True)
    assert real == HEAD  # the shipped defaults


@pytest.mark.parametrize("fw", [UFW, FIREWALLD, NFT])
def test_a_dropped_port_to_the_host_fails_with_the_fix_on_the_host(fw: Firewall) -> None:
    r = doctor.ports_to_host(HEAD, all_open(HEAD, p6380="timeout"), "10.0.0.1", fw)
    assert r.mark is Mark.FAIL
    assert r.value.startswith("6380 node manager: dropped: timeout; open 6379 6381 6382")
    assert r.value.endswith("reachable, nothing listening 10002 10051 10100")
    assert r.fix == "on the host 10.0.0.1: " + doctor.open_ports_command(fw, [6380])


def test_a_dropped_worker_port_opens_the_whole_range() -> None:
    r = doctor.ports_to_host(HEAD, all_open(HEAD, p10051="timeout"), "10.0.0.1", UFW)
    assert r.mark is Mark.FAIL
    assert r.fix == "on the host 10.0.0.1: sudo ufw allow 10002:10100/tcp"


def test_refused_is_reachable_but_a_refused_gcs_warns() -> None:
    ok = doctor.ports_to_host(HEAD, all_open(HEAD), "h", UFW)
    assert ok.mark is Mark.PASS and ok.fix == ""
    r = doctor.ports_to_host(HEAD, all_open(HEAD, p6379="refused"), "h", UFW)
    assert r.mark is Mark.WARN and "start the host" in r.fix
    err = doctor.ports_to_host(HEAD, all_open(HEAD, p6382="error: No route to host"), "h", UFW)
    assert err.mark is Mark.FAIL and "6382 dashboard agent: error: No route to host" in err.value


@pytest.mark.parametrize("fw", [UFW, FIREWALLD, NFT])
def test_a_port_the_host_cannot_reach_back_fails_with_this_machines_fix(fw: Firewall) -> None:
    r = doctor.ports_from_host(NODE, all_open(NODE, p6381="timeout"), fw)
    assert r.mark is Mark.FAIL and r.value.startswith("6381 object manager: dropped: timeout")
    assert r.fix == doctor.open_ports_command(fw, [6381])
    assert doctor.ports_from_host(NODE, all_open(NODE), fw).mark is Mark.PASS


def test_before_pairing_the_back_check_is_a_skip() -> None:
    r = doctor.ports_from_host(NODE, None, UFW, doctor.NOT_PAIRED)
    assert r.mark is Mark.SKIP and r.value == doctor.NOT_PAIRED
    report = doctor.Report("h", [r])
    assert report.ok


# ----- the other checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "mark", "fix_has"),
    [
        ("wired", Mark.PASS, ""),
        ("wifi", Mark.WARN, "wired link"),
        ("vpn", Mark.WARN, "ray.node_ip"),
        ("bridge", Mark.WARN, "ray.node_ip"),
    ],
)
def test_the_interface_kind(kind: str, mark: Mark, fix_has: str) -> None:
    r = doctor.interface("x0", "10.0.0.2", kind, "10.0.0.1")
    assert r.mark is mark and r.value == f"x0 10.0.0.2 ({kind})" and fix_has in r.fix


def test_link_local_and_no_route() -> None:
    r = doctor.interface("eth0", "169.254.3.4", "wired", "10.0.0.1")
    assert r.mark is Mark.WARN and "link-local" in r.value and r.fix.startswith("sudo dhclient")
    none = doctor.interface(None, None, "", "10.0.0.1")
    assert none.mark is Mark.FAIL and none.value == "no route to 10.0.0.1"


def test_versions() -> None:
    assert doctor.versions(("2.60.0", "3.11"), ("2.60.0", "3.11")).mark is Mark.PASS
    r = doctor.versions(("2.60.0", "3.11"), ("2.59.0", "3.11"))
    assert r.mark is Mark.FAIL and r.fix == "pip install 'ray[default]==2.59.0'"
    py = doctor.versions(("2.60.0", "3.11"), ("2.60.0", "3.12"))
    assert py.fix == "install Python 3.12 and lanray-tui in it"
    assert doctor.versions(("2.60.0", "3.11"), None).mark is Mark.SKIP


def test_clock_skew_thresholds_allow_for_the_round_trip() -> None:
    assert doctor.clock(0.3, 0.01).mark is Mark.PASS
    assert doctor.clock(1.5, 0.8).mark is Mark.PASS  # within the uncertainty
    warn = doctor.clock(-5.0, 0.01)
    assert warn.mark is Mark.WARN and warn.value.startswith("-5.00 s")
    fail = doctor.clock(45.0, 0.01)
    assert fail.mark is Mark.FAIL and fail.fix.startswith("sudo timedatectl set-ntp true")
    assert doctor.clock(None, 0).mark is Mark.SKIP


def test_path_mtu_and_loss() -> None:
    assert doctor.path_mtu("eth0", 1500, 1500).mark is Mark.PASS
    low = doctor.path_mtu("eth0", 1500, 1196)
    assert low.mark is Mark.FAIL and low.fix.startswith("sudo ip link set dev eth0 mtu 1196")
    assert doctor.path_mtu("eth0", 1500, None).mark is Mark.WARN  # ICMP blocked
    assert doctor.path_mtu("eth0", 1500, None, "needs root").mark is Mark.SKIP
    assert doctor.loss(0, 30, "eth0").mark is Mark.PASS
    assert doctor.loss(1, 30, "eth0").mark is Mark.WARN
    bad = doctor.loss(9, 30, "eth0")
    assert bad.mark is Mark.FAIL and bad.value == "30 % (9 of 30 pings lost)"
    assert bad.fix.startswith("ip -s link show dev eth0")


def test_client_isolation_both_ways() -> None:
    def iso(bcast: bool | None, udp: bool, tcp: str) -> doctor.Result:
        return doctor.isolation(bcast, udp, tcp, "10.0.0.1", 47476, UFW)

    assert iso(True, True, "open").mark is Mark.PASS
    blocked = iso(True, False, "timeout")
    assert blocked.mark is Mark.FAIL and blocked.value.endswith("unicast blocked")
    assert blocked.fix.startswith("turn off client (AP) isolation")
    tcp = iso(True, True, "timeout")
    assert tcp.mark is Mark.FAIL and tcp.fix == "on the host 10.0.0.1: sudo ufw allow 47476/tcp"
    quiet = iso(False, True, "open")
    assert quiet.mark is Mark.WARN and quiet.fix == "join by address: lanray-tui join 10.0.0.1"
    udp = iso(True, False, "open")
    assert udp.mark is Mark.WARN and "does not answer scans" in udp.value
    assert udp.fix == "on the host 10.0.0.1: sudo ufw allow 47474/udp"
    dark = iso(False, False, "timeout")
    assert dark.mark is Mark.FAIL and "nothing from here reaches the host" in dark.value


def test_docker_and_gpus() -> None:
    assert doctor.docker("native", None, False, 0).value == "not the docker runtime"
    down = doctor.docker("docker", "the Docker daemon does not answer", False, 0)
    assert down.mark is Mark.FAIL and "systemctl start docker" in down.fix
    no_rt = doctor.docker("docker", None, False, 2)
    assert no_rt.mark is Mark.FAIL and no_rt.fix.startswith("sudo nvidia-ctk runtime configure")
    ok = doctor.docker("docker", None, True, 2, ["GPU-a", "GPU-b"])
    assert ok.mark is Mark.PASS and "containers get 2 GPU(s)" in ok.value
    assert doctor.gpu(0, "NVML: no driver").value == "no GPU (NVML: no driver)"
    assert doctor.gpu(1, "", "550.54", "12.4").value == "1 GPU(s), driver 550.54, CUDA 12.4"


def test_raw_sockets_are_a_warning_with_the_capability_fix() -> None:
    assert doctor.raw_sockets(True, "root", "/usr/bin/python3").mark is Mark.PASS
    r = doctor.raw_sockets(False, "needs root or CAP_NET_RAW", "/usr/bin/python3.11")
    assert r.mark is Mark.WARN and r.fix.startswith(
        "sudo setcap cap_net_raw+ep /usr/bin/python3.11"
    )


def test_the_report_text_and_json() -> None:
    report = doctor.Report(
        "10.0.0.1",
        [
            doctor.versions(("2.60.0", "3.11"), ("2.60.0", "3.11")),
            doctor.loss(9, 30, "eth0"),
            doctor.docker("native", None, False, 0),
        ],
    )
    assert not report.ok
    lines = report.lines()
    assert lines[0].startswith("✔ Versions (Ray, Python)  this node Ray 2.60.0")
    assert lines[1].startswith("✘ Packet loss")
    assert lines[2].startswith("    fix: ip -s link show dev eth0")
    assert lines[3].startswith("- Docker and GPUs")
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is False and [c["mark"] for c in data["checks"]] == ["pass", "fail", "skip"]


# ----- the adapter, on loopback --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dial_tells_open_from_refused() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        closed = free_port()
        assert netprobe.dial_many("127.0.0.1", [port, closed]) == {
            port: "open",
            closed: "refused",
        }


def test_listeners_listen_again_right_after_and_leave_taken_ports_alone() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        port = free_port()
        for _ in range(2):  # the second time, the first's connections are in TIME_WAIT
            with netprobe.Listeners("127.0.0.1", [port, taken]) as ls:
                assert ls.listening == [port] and ls.taken == [taken]
                assert netprobe.dial("127.0.0.1", port) == "open"
        assert netprobe.dial("127.0.0.1", port) == "refused"


def test_interface_kind_and_mtu_from_sysfs(tmp_path: Path) -> None:
    for name, marker in (("wlp2s0", "wireless"), ("wlan1", "phy80211"), ("br9", "bridge")):
        (tmp_path / name / marker).mkdir(parents=True)
    (tmp_path / "tun0").mkdir()
    (tmp_path / "tun0" / "tun_flags").write_text("0x1001\n")
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "mtu").write_text("1500\n")
    kinds = {n: netprobe.interface_kind(n, tmp_path) for n in ("wlp2s0", "wlan1", "br9", "tun0")}
    assert kinds == {"wlp2s0": "wifi", "wlan1": "wifi", "br9": "bridge", "tun0": "vpn"}
    assert netprobe.interface_kind("wg0", tmp_path) == "vpn"
    assert netprobe.interface_kind("docker0", tmp_path) == "bridge"
    assert netprobe.interface_kind("eth0", tmp_path) == "wired"
    assert netprobe.mtu("eth0", tmp_path) == 1500 and netprobe.mtu("nope", tmp_path) is None


def test_the_nft_input_chain_that_drops_is_the_one_to_fix() -> None:
    ruleset = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "inet", "table": "a", "name": "in", "hook": "input"}},
            {"chain": {"family": "inet", "table": "lrdoctor", "name": "input", "hook": "input"}},
            {
                "rule": {
                    "family": "inet",
                    "table": "lrdoctor",
                    "chain": "input",
                    "expr": [{"match": {"right": 6381}}, {"drop": None}],
                }
            },
        ]
    }
    assert nftables.input_chain(ruleset) == ("inet lrdoctor", "input")
    # lanray-tui's own guard table rejects too, but it is not the owner's chain to fix
    guard = {"family": "inet", "table": "lanray_guard", "name": "input", "hook": "input"}
    ours = {"rule": {**guard, "chain": "input", "expr": [{"reject": None}]}}
    first = [ruleset["nftables"][0], {"chain": guard}, ours, *ruleset["nftables"][1:2]]
    assert nftables.input_chain({"nftables": first}) == ("inet a", "in")
    assert nftables.input_chain({"nftables": ruleset["nftables"][:2]}) == ("inet a", "in")
    assert nftables.input_chain({}) == ("inet filter", "input")
    assert nftables.input_chain("junk") == ("inet filter", "input")


def test_udp_listen_sees_the_destination_and_exchange_gets_the_answer() -> None:
    port = free_port()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(netprobe.listen_udp(port, 1.0, "127.0.0.1")))
    t.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(20):  # until the listener is bound
            s.sendto(b"hello", ("127.0.0.1", port))
            threading.Event().wait(0.02)
    t.join()
    grams, problem = got[0]
    assert problem == "" and grams and grams[0].data == b"hello"
    assert grams[0].destination == "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo:
        echo.bind(("127.0.0.1", 0))
        echo_port = echo.getsockname()[1]

        def answer() -> None:
            data, peer = echo.recvfrom(100)
            echo.sendto(data.upper(), peer)

        threading.Thread(target=answer, daemon=True).start()
        data, sent, received = netprobe.udp_exchange("127.0.0.1", echo_port, b"q", 2.0)
        assert data == b"Q" and 0 <= received - sent < 2.0


def test_ping_on_loopback() -> None:
    with netprobe.Pinger("127.0.0.1") as p:
        if p.problem:
            pytest.skip(p.problem)
        assert p.loss(5) == 0
        assert p.path_mtu(1500) == 1500
        assert p.echo(70000, 0.5) == "too big"  # larger than any IP packet: refused


# ----- the dial-back over the real cluster API ----------------------------------------------


class NoRay:
    def nodes(self, timeout: float = 5.0) -> list[object]:
        return []


@pytest.fixture
def host_api(tmp_path: Path) -> Iterator[tuple[NodeTls, int]]:
    """The host's cluster API (mutual TLS, the ``probe`` op) on loopback, in a thread."""
    host = NodeTls(tmp_path / "host")
    host.ensure_ca("c0ffee", "lab")
    host.issue_own("head", ["127.0.0.1"])
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        s = ControlServer()
        s.handlers["probe"] = MemberOps(NoRay(), host).op_probe  # type: ignore[arg-type]
        srv = await asyncio.start_server(s.serve_remote, "127.0.0.1", 0, ssl=host.server_context())
        box["port"] = srv.sockets[0].getsockname()[1]
        ready.set()

    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert ready.wait(10)
    try:
        yield host, box["port"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


def test_the_host_dials_back_the_ports_this_node_listens_on(host_api: tuple[NodeTls, int]) -> None:
    host, api_port = host_api
    cfg = load().with_overrides(cluster__api_port=api_port)
    ports = [free_port(), free_port()]
    unpaired = doctor_run._probe_back(cfg, "127.0.0.1", "127.0.0.1", ports)
    assert unpaired == (None, doctor.NOT_PAIRED, "")
    member = NodeTls(cfg.paths().tls_dir)
    member.store(host.sign(member.request("w1", ["127.0.0.1"])), host.ca_cert.read_bytes())
    found, skip, why = doctor_run._probe_back(cfg, "127.0.0.1", "127.0.0.1", ports)
    assert skip == why == "" and found == {ports[0]: "open", ports[1]: "open"}
    r = doctor.ports_from_host(
        doctor.RayPorts({ports[0]: "node manager", ports[1]: "object manager"}, (1, 1)),
        found,
        UFW,
    )
    assert r.mark is Mark.PASS


def test_the_back_check_says_why_when_the_host_does_not_answer() -> None:
    cfg = load().with_overrides(cluster__api_port=free_port())
    host = NodeTls(cfg.paths().tls_dir.parent / "h")
    host.ensure_ca("c0ffee", "lab")
    member = NodeTls(cfg.paths().tls_dir)
    member.store(host.sign(member.request("w1", ["127.0.0.1"])), host.ca_cert.read_bytes())
    found, _, why = doctor_run._probe_back(cfg, "127.0.0.1", "127.0.0.1", [free_port()])
    assert found is None and why.startswith("the host's cluster API did not answer")
    r = doctor.ports_from_host(NODE, found, UFW, failed=why)
    assert r.mark is Mark.WARN and "see MTU" in r.fix


# ----- the command ---------------------------------------------------------------------------


def test_bad_arguments_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --bogus" in err[0]


def test_on_the_host_itself_it_checks_its_own_side(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "127.0.0.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["host"] == "127.0.0.1" and out["ok"] is True
    checks = {c["check"]: c for c in out["checks"]}
    assert "joiners need them open" in checks["host_ports"]["value"]
    assert checks["docker"]["value"] == "not the docker runtime"
    assert any("this is the host" in n for n in out["notes"])


def test_the_driver_and_cuda_versions_come_from_nvml() -> None:
    from lanray_tui.adapters.nvml import Nvml

    class FakeNvml:
        def nvmlInit(self) -> None:
            pass

        def nvmlDeviceGetCount(self) -> int:
            return 1

        def nvmlDeviceGetHandleByIndex(self, i: int) -> object:
            return object()

        def nvmlSystemGetDriverVersion(self) -> str:
            return "550.54.15"

        def nvmlSystemGetCudaDriverVersion(self) -> int:
            return 12040

    assert Nvml(FakeNvml()).driver() == ("550.54.15", "12.4")

    class NoDriver(FakeNvml):
        def nvmlInit(self) -> None:
            raise RuntimeError("driver not loaded")

    assert Nvml(NoDriver()).driver() == ("", "")
