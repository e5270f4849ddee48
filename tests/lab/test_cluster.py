"""Issue 2 end to end: a real 2-node cluster in the lab, driven through the real CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import needs_root
from tests.helpers.labkit import LANRAY, Node, node_states, wait_for

pytestmark = needs_root
DRIVER = Path(__file__).resolve().parents[1] / "drivers" / "each_node.py"


def test_two_nodes_alive(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    status = n1.status()
    states = node_states(n1)
    assert states[n1.address] == "ALIVE" and states[n2.address] == "ALIVE"
    roles = {n["ip"]: n["role"] for n in status["nodes"] if n["state"] == "ALIVE"}
    assert roles == {n1.address: "head", n2.address: "worker"}
    for n in status["nodes"]:
        assert {"ip", "role", "state", "cpus", "gpus", "memory_gb"} <= set(n)
    agent = status["agent"]
    assert agent["role"] == "host" and agent["version"] and agent["pid"] > 0
    # the worker's view goes to the same head
    assert n2.status()["agent"]["role"] == "worker"
    assert node_states(n2)[n2.address] == "ALIVE"
    # what Ray has not handed out, from the host's summary (refreshed every 2 s)
    wait_for(lambda: n2.status().get("free") is not None, timeout=15)
    free = n2.status()["free"]
    total = sum(n["cpus"] for n in status["nodes"] if n["state"] == "ALIVE")
    assert 0 <= free["free_cpus"] <= total and free["free_memory_gb"] > 0
    assert "free: " in n1.lanray("status", check=True).stdout.splitlines()[1]
    rows = {n["ip"]: n for n in n1.status()["nodes"] if n["state"] == "ALIVE"}
    rt = rows[n1.address]["runtime"]
    assert rt["kind"] == "native" and set(rt) == {"kind", "agent_mb", "ray_mb", "guard"}
    assert rt["guard"]["state"] == "on"  # the lab's agents run as root: Ray's HTTP is guarded
    # each agent's own memory beside its Ray's (issue 18), in MiB
    assert 10 < rt["agent_mb"] < 200 and rt["ray_mb"] > rt["agent_mb"]
    wait_for(lambda: (row_of(n1, n2.address).get("runtime") or {}).get("kind") == "native", 10)
    assert row_of(n1, n2.address)["runtime"]["ray_mb"] > 0


def test_node_ip_is_the_lan_address(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    assert n1.status()["agent"]["node_ip"] == n1.address
    assert n2.status()["agent"]["node_ip"] == n2.address


def test_a_ray_task_runs_on_each_node(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    env = n1.ray_env(n1.token())
    p = n1.run([LANRAY[0], str(DRIVER), f"{n1.address}:6379", n1.address], env=env, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    ran = json.loads(p.stdout.strip().splitlines()[-1])
    assert ran == {n1.address: n1.address, n2.address: n2.address}


def test_driver_without_token_is_refused(cluster: dict[str, Any]) -> None:
    """Token auth stays on under TLS: a driver with this node's certificate but no token
    (or a wrong one) is refused. (One without a certificate: tests/lab/test_ray_tls.py.)"""
    n1 = cluster["n1"]
    for token in ("", "0" * 64):
        env = n1.ray_env(token)
        if not token:
            del env["RAY_AUTH_TOKEN"]
        p = n1.run([LANRAY[0], str(DRIVER), f"{n1.address}:6379", n1.address], env=env,
                   timeout=120)  # fmt: skip
        assert p.returncode != 0, p.stdout


def test_token_file_is_private_and_not_printed(cluster: dict[str, Any]) -> None:
    n1 = cluster["n1"]
    token = n1.token()
    assert len(token) == 64
    creds = Path(n1.lab.node("n1").root) / "home/.local/share/lanray-tui/cluster.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    sock = Path(n1.lab.node("n1").root) / "run/lanray-tui/agent.sock"
    assert sock.stat().st_mode & 0o777 == 0o600
    assert token not in n1.lanray("status").stdout
    assert token not in n1.lanray("status", "--json").stdout


def test_second_host_says_so(cluster: dict[str, Any]) -> None:
    n1 = cluster["n1"]
    before = n1.status()["agent"]["pid"]
    p = n1.lanray("host", "--headless", "--detach")
    assert p.returncode == 1
    assert "already hosts cluster" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert n1.status()["agent"]["pid"] == before


def test_agent_survives_the_cli(cluster: dict[str, Any]) -> None:
    """A foreground join whose terminal goes away (SIGHUP, then SIGKILL) leaves the node up."""
    n1, n2 = cluster["n1"], cluster["n2"]
    n2.leave()
    token_file = Path(n2.lab.node("n2").root) / "home" / "cluster-token"
    token_file.write_text(n1.token() + "\n")
    token_file.chmod(0o600)
    proc = n2.popen(
        [*LANRAY, "join", n1.address, "--token-file", str(token_file), "--headless"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline and "joined" not in seen:
            seen += proc.stdout.readline()
        assert "joined" in seen, seen
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    agent = n2.status()["agent"]
    assert agent["state"] == "ready"
    assert node_states(n1)[n2.address] == "ALIVE"


def test_leave_makes_the_worker_dead(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    p = n2.lanray("leave", timeout=90)
    assert p.returncode == 0, p.stderr
    assert not n2.agent_running()
    wait_for(lambda: node_states(n1).get(n2.address) == "DEAD", timeout=30)
    p = n2.lanray("leave")
    assert p.returncode == 1 and "nothing to leave" in p.stderr


def test_worker_cannot_print_token(cluster: dict[str, Any]) -> None:
    n2: Node = cluster["n2"]
    p = n2.lanray("token")
    assert p.returncode == 1 and "only the host" in p.stderr


def row_of(node: Any, ip: str) -> dict[str, Any]:
    return next((n for n in node.status()["nodes"] if n["ip"] == ip and n["state"] == "ALIVE"), {})


def _cmdlines_with(secret: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            raw = cmdline.read_bytes()
        except OSError:
            continue
        if secret.encode() in raw:
            found.append(f"{cmdline.parent.name}: {raw[:120]!r}")
    return found


def test_the_token_is_on_no_command_line_after_any_join(cluster: dict[str, Any]) -> None:
    """By stdin (the fixture's join), by file and by LANRAY_TOKEN: no process on this machine,
    in any lab node, has the token in its command line; a token given there is refused."""
    n1, n2 = cluster["n1"], cluster["n2"]
    token = n1.token()
    assert _cmdlines_with(token) == []
    n2.leave()
    token_file = Path(n2.lab.node("n2").root) / "home" / "cluster-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    p = n2.run(["sh", "-c", f'LANRAY_TOKEN="$(cat {token_file})" exec "$@"', "sh", *LANRAY,
                "join", n1.address, "--headless", "--detach"], timeout=180)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert _cmdlines_with(token) == []
    n2.leave()
    p = n2.lanray("join", n1.address, "--token-file", str(token_file), "--headless", "--detach",
                  timeout=180)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert _cmdlines_with(token) == []
    p = cluster["n3"].lanray("join", n1.address, "--token", token, "--headless")
    assert p.returncode == 1 and "--token-file" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
