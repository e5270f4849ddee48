"""Ray over mutual TLS on the session's real 2-node cluster in the lab, and nothing of Ray
in clear on the LAN.

n1 hosts (its CA signed its own certificate) and n2 joined by token (its certificate came by
the authenticated exchange). Then: both nodes ALIVE, tasks on both nodes, a job with a
working_dir uploaded over Ray's gRPC, ``status`` on both nodes; a client with the token but
without a certificate gets nothing from the head's GCS; the dashboard and the Jobs API
answer nothing on LAN addresses, and `lanray-tui dashboard` on n2 forwards to them; Ray's
other plain-HTTP ports reset a peer (the agents' nftables guard), and a job's log still
reaches the head from the node its driver ran on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.core import config, guard
from lanray_tui.core import lab as labmod
from lanray_tui.core.cluster_ca import NodeTls
from tests.conftest import needs_root
from tests.helpers.labkit import LANRAY, Node, node_states, wait_for

pytestmark = needs_root
# the agents guard Ray's plain-HTTP ports with nft (scripts/test.sh installs nftables)
needs_nft = pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (nftables)")

# a lab of its own (the session's lab may be up with the name LAB): at most 8 characters
GCS_PORT, DASHBOARD_PORT, AGENT_HTTP_PORT, CLIENT_PORT = 6379, 8265, 52365, 10001


def node_tls(lab: labmod.Lab, name: str) -> NodeTls:
    data = Path(lab.node(name).env()["XDG_DATA_HOME"]) / "lanray-tui"
    return NodeTls(data / "tls")


# Ask the head's GCS for its nodes, with whatever Ray settings the environment has.
GCS_PROBE = """
import sys
from ray._raylet import GcsClient
print(len(GcsClient(address=sys.argv[1]).get_all_node_info(timeout=5)))
"""


def gcs_nodes(node: Node, gcs: str, env: dict[str, str], timeout: float) -> str:
    """How many nodes the GCS lists to this client, or why it listed none."""
    try:
        p = node.run([sys.executable, "-c", GCS_PROBE, gcs], timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timed out"
    return p.stdout.strip() if p.returncode == 0 else f"failed: {p.stderr.strip()[-200:]}"


# Open a TCP connection and send one HTTP request: what answers, or why nothing did.
HTTP_PROBE = """
import json, os, socket, sys
host, port, method, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
body = sys.argv[5].encode() if len(sys.argv) > 5 else b""
token = os.environ.get("PROBE_TOKEN", "")
auth = f"Authorization: Bearer {token}\\r\\n" if token else ""
try:
    s = socket.create_connection((host, port), timeout=5)
except OSError as exc:
    print(json.dumps({"connected": False, "error": type(exc).__name__}))
    raise SystemExit(0)
req = (f"{method} {path} HTTP/1.1\\r\\nHost: {host}\\r\\nContent-Type: application/json\\r\\n"
       f"Content-Length: {len(body)}\\r\\n{auth}Connection: close\\r\\n\\r\\n").encode() + body
s.sendall(req)
s.settimeout(10)
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
except OSError:
    pass
print(json.dumps({"connected": True, "reply": data.decode(errors="replace")[:400]}))
"""


def http(node: Node, host: str, port: int, method: str, path: str, body: str = "") -> dict:
    argv = [sys.executable, "-c", HTTP_PROBE, host, str(port), method, path]
    p = node.run([*argv, body] if body else argv, timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)  # type: ignore[no-any-return]


@pytest.fixture()
def tls_cluster(cluster: dict[str, Any], lab: labmod.Lab) -> dict[str, Any]:
    """The session's cluster (n1 hosts, n2 joined by token), with its lab."""
    return {"lab": lab, **cluster}


JOB = """
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from helper import GREETING

@ray.remote(num_cpus=0)
def where():
    return ray.util.get_node_ip_address()

ray.init()
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
on = lambda n: where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
print(GREETING, "tasks ran on", sorted(ray.get([on(n).remote() for n in alive])), flush=True)
"""


def test_both_nodes_alive_tasks_on_both_and_a_working_dir_job(
    tls_cluster: dict[str, Any], tmp_path: Path
) -> None:
    n1, n2 = tls_cluster["n1"], tls_cluster["n2"]
    want = {n1.address: "ALIVE", n2.address: "ALIVE"}

    def both(node: Node) -> dict[str, str]:  # earlier joins of the session leave DEAD rows
        return {ip: s for ip, s in node_states(node).items() if s == "ALIVE"}

    wait_for(lambda: both(n1) == want, 60)
    assert both(n2) == want  # status works on the worker too
    work = tmp_path / "proj"
    work.mkdir()
    (work / "helper.py").write_text("GREETING = 'hello over TLS'\n")
    (work / "job.py").write_text(textwrap.dedent(JOB))
    # submitted on the head: the working dir goes into the GCS over Ray's mutual-TLS gRPC
    p = n1.lanray("submit", str(work / "job.py"), "--follow", timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"hello over TLS tasks ran on {sorted([n1.address, n2.address])}" in p.stdout
    # and from the worker, which reaches no dashboard: the same upload, from there
    (work / "helper.py").write_text("GREETING = 'hello from the worker'\n")
    code = "from helper import GREETING; print(GREETING)"
    p = n2.lanray(
        "submit", "--working-dir", str(work), "--follow", "--", "python", "-c", code, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "hello from the worker" in p.stdout


def test_the_worker_got_its_certificate_by_the_exchange(tls_cluster: dict[str, Any]) -> None:
    """n2 joined by token: its key was made on n2 (mode 0600), its certificate is the host
    CA's and names n2's address, and n1 holds the CA key, which n2 never got."""
    lab = tls_cluster["lab"]
    host, worker = node_tls(lab, "n1"), node_tls(lab, "n2")
    assert worker.ready() and worker.covers([lab.node("n2").address])
    assert worker.key.stat().st_mode & 0o777 == 0o600
    assert worker.ca_cert.read_bytes() == host.ca_cert.read_bytes()
    assert host.ca_key.is_file() and not worker.ca_key.exists()
    assert worker.key.read_bytes() != host.key.read_bytes()


def test_a_client_without_a_certificate_gets_nothing_from_the_gcs(
    tls_cluster: dict[str, Any],
) -> None:
    n1, n2 = tls_cluster["n1"], tls_cluster["n2"]
    lab = tls_cluster["lab"]
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": n1.token()}
    gcs = f"{n1.address}:{GCS_PORT}"
    # with the token and n2's certificate: the GCS answers (the probe itself works)
    # (the session's earlier joins leave DEAD entries: the GCS lists those too)
    listed = gcs_nodes(n2, gcs, {**token, **node_tls(lab, "n2").ray_env()}, 60)
    assert listed.isdigit() and int(listed) >= 2, listed
    # with the token and no TLS: nothing
    got = gcs_nodes(n2, gcs, token, 6)
    assert got == "timed out" or got.startswith("failed"), got
    # a plaintext HTTP/2 (gRPC) greeting gets no greeting back from any of Ray's gRPC ports
    for port in (GCS_PORT, 6380, 6381, 6382, CLIENT_PORT):
        reply = probe_h2c(n2, n1.address, port)
        assert reply in ("closed", "no reply"), (port, reply)


def test_the_dashboard_answers_on_the_heads_loopback_only(tls_cluster: dict[str, Any]) -> None:
    n1, n2 = tls_cluster["n1"], tls_cluster["n2"]
    assert http(n1, "127.0.0.1", DASHBOARD_PORT, "GET", "/api/version")["connected"]
    for node in (n1, n2):
        got = http(node, n1.address, DASHBOARD_PORT, "GET", "/api/version")
        assert got == {"connected": False, "error": "ConnectionRefusedError"}, got
    # a node's own dashboard agent (by its own LAN address: that arrives on lo) wants the token
    body = json.dumps({"entrypoint": "true", "submission_id": "no-token"})
    got = http(n2, n2.address, AGENT_HTTP_PORT, "POST", "/api/job_agent/jobs/", body)
    assert got["reply"].startswith("HTTP/1.1 401"), got
    # 'lanray-tui dashboard' on n2: a local forward, over mutual TLS, to the head's loopback
    forward = n2.popen([*LANRAY, "dashboard", "--port", "18265"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert forward.stdout is not None
        assert "http://127.0.0.1:18265" in forward.stdout.readline()
        got = http(n2, "127.0.0.1", 18265, "GET", "/api/version")
        assert got["connected"] and got["reply"].startswith("HTTP/1.1 "), got
    finally:
        forward.terminate()
        forward.wait(10)


@needs_nft
def test_a_token_without_a_certificate_cannot_submit_through_a_dashboard_agent(
    tls_cluster: dict[str, Any],
) -> None:
    """Ray's dashboard agent serves /api/job_agent/ on the node's LAN address with the token
    only (no flag binds it to loopback): the agent's guard resets a peer's connection."""
    n1, n2 = tls_cluster["n1"], tls_cluster["n2"]
    body = json.dumps({"entrypoint": "true", "submission_id": "token-only"})
    argv = [sys.executable, "-c", HTTP_PROBE, n1.address, str(AGENT_HTTP_PORT), "POST"]
    p = n2.run([*argv, "/api/job_agent/jobs/", body], timeout=30, env={"PROBE_TOKEN": n1.token()})
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got == {"connected": False, "error": "ConnectionRefusedError"}, got


# Ray's ports that speak TLS (gRPC), and lanray-tui's own (TLS too): every other port that
# listens on a LAN address is plain HTTP, and must be in the guard's list.
TLS_PORTS = {GCS_PORT, 6380, 6381, 6382, CLIENT_PORT, 47475, 47476, 47477}
WORKER_PORTS = range(10002, 10101)


def lan_listeners(node: Node) -> set[int]:
    """The TCP ports that listen on something other than loopback on ``node``."""
    out = node.run(["ss", "-Hltn"], check=True).stdout
    ports = set()
    for line in out.splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        if "127.0.0.1" not in address and address not in ("[::1]",):
            ports.add(int(port))
    return ports


@needs_nft
def test_no_plain_http_port_of_ray_answers_a_peer_and_each_node_still_reaches_its_own(
    tls_cluster: dict[str, Any],
) -> None:
    """Every plain-HTTP port Ray listens on (the dashboard agent, runtime-env agent, metrics
    exporters; the head's dashboard and autoscaler metrics) resets a peer's connection, a
    member's (n2) or a stranger's (n3, never paired); the node itself reaches them by its
    own LAN address; a joined node's dashboard agent takes the host's address too."""
    n1, n2, n3 = tls_cluster["n1"], tls_cluster["n2"], tls_cluster["n3"]
    ports = guard.http_ports(config.load().__getitem__)
    for node in (n1, n2):  # both agents say the guard is on
        rows = {r["ip"]: r for r in node.status()["nodes"] if r["state"] == "ALIVE"}
        for ip in (n1.address, n2.address):
            assert rows[ip]["runtime"]["guard"]["state"] == "on", rows[ip]["runtime"]
    # nothing that listens on the LAN is plain HTTP unless the guard names it
    for node in (n1, n2):
        found = {p for p in lan_listeners(node) if p not in WORKER_PORTS} - TLS_PORTS
        assert found <= set(ports), (node.name, sorted(found - set(ports)))
    head_http = lan_listeners(n1) & set(ports)
    assert head_http == {6383, 6384, 44217, 44227, AGENT_HTTP_PORT}, head_http
    assert lan_listeners(n2) & set(ports) == {6383, 6384, AGENT_HTTP_PORT}
    refused = {"connected": False, "error": "ConnectionRefusedError"}
    for port in sorted(head_http):
        for peer in (n2, n3):
            assert http(peer, n1.address, port, "GET", "/") == refused, (peer.name, port)
        own = http(n1, n1.address, port, "GET", "/")  # the head, by its own LAN address
        assert own["connected"] and own["reply"].startswith("HTTP/1."), (port, own)
    for port in (6383, 6384, AGENT_HTTP_PORT):
        assert http(n3, n2.address, port, "GET", "/") == refused, port
        own = http(n2, n2.address, port, "GET", "/")
        assert own["connected"] and own["reply"].startswith("HTTP/1."), (port, own)
        from_host = http(n1, n2.address, port, "GET", "/")
        if port == AGENT_HTTP_PORT:  # the host's dashboard reads job logs there
            assert from_host["connected"], from_host
        else:
            assert from_host == refused, (port, from_host)


@needs_nft
def test_the_log_of_a_job_whose_driver_runs_on_the_worker_reaches_the_host(
    tls_cluster: dict[str, Any],
) -> None:
    """A job that asks for resources may get its driver on a joined node; the head's
    dashboard then reads its log from that node's dashboard agent, which the guard lets the
    host's address reach (here: a driver pinned to n2 through Ray's own Jobs API)."""
    n1, n2 = tls_cluster["n1"], tls_cluster["n2"]
    sid = f"guard-logs-{uuid.uuid4().hex[:8]}"
    body = json.dumps(
        {
            "entrypoint": "echo driver on $(hostname -I)",
            "submission_id": sid,
            "entrypoint_resources": {f"node:{n2.address}": 0.01},
        }
    )
    token = {"PROBE_TOKEN": n1.token()}

    def ask(method: str, path: str, data: str = "") -> str:
        argv = [sys.executable, "-c", HTTP_PROBE, "127.0.0.1", str(DASHBOARD_PORT), method, path]
        p = n1.run([*argv, data] if data else argv, timeout=30, env=token)
        assert p.returncode == 0, p.stderr
        return str(json.loads(p.stdout).get("reply", ""))

    assert ask("POST", "/api/jobs/", body).startswith("HTTP/1.1 200"), sid
    wait_for(lambda: '"SUCCEEDED"' in ask("GET", f"/api/jobs/{sid}"), 120, interval=2)
    logs = ask("GET", f"/api/jobs/{sid}/logs")
    assert logs.startswith("HTTP/1.1 200") and f"driver on {n2.address}" in logs, logs


H2C_PROBE = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
except OSError as exc:
    print(type(exc).__name__)
    raise SystemExit(0)
s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
s.settimeout(5)
try:
    data = s.recv(64)
    print(data.hex() if data else "closed")
except OSError:
    print("no reply")
"""


def probe_h2c(node: Node, host: str, port: int) -> str:
    p = node.run([sys.executable, "-c", H2C_PROBE, host, str(port)], timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()
