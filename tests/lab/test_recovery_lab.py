"""Issue 18 in the lab: a restarted agent adopts the Ray that its killed predecessor left
running; a Ray of another cluster is refused in one line and 'leave --force' clears it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tests.conftest import needs_root
from tests.helpers.labkit import Node, node_states, wait_for

pytestmark = needs_root


def state_dir(node: Node) -> Path:
    return Path(node.lab.node(node.name).root) / "home/.local/state/lanray-tui"


def recorded_ray(node: Node) -> int:
    return int(json.loads((state_dir(node) / "ray.json").read_text())["pid"])


def test_sigkill_of_a_worker_agent_keeps_its_node_alive(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    wait_for(lambda: node_states(n1).get(n2.address) == "ALIVE", 60)
    ray_pid = recorded_ray(n2)
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:  # what the host says of n2 while its agent is gone
        while not done.is_set():
            seen.append(node_states(n1).get(n2.address, "missing"))
            done.wait(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        old = int(n2.status()["agent"]["pid"])
        assert n2.run(["kill", "-9", str(old)]).returncode == 0
        wait_for(lambda: not n2.agent_running(), 30)
        p = n2.lanray("join", "--headless", "--detach", timeout=180)
        assert p.returncode == 0, p.stderr
        agent = n2.status()["agent"]
        assert agent["pid"] != old and agent["state"] == "ready"
    finally:
        done.set()
        watcher.join()
    assert recorded_ray(n2) == ray_pid  # the same Ray, adopted
    assert seen and set(seen) == {"ALIVE"}, seen
    wait_for(lambda: _link(n1, n2) == "UP", 15)  # and its new agent heartbeats


def _link(n1: Node, n2: Node) -> str:
    rows = [r for r in n1.status()["nodes"] if r["ip"] == n2.address and r["state"] == "ALIVE"]
    return str(rows[0]["link"]) if rows else ""


def test_a_ray_of_another_cluster_is_refused_and_leave_force_clears_it(lab: Any) -> None:
    n3 = Node(lab, "n3")
    n3.lanray("host", "--headless", "--detach", check=True, timeout=180)
    try:
        ray_pid = recorded_ray(n3)
        n3.run(["kill", "-9", str(n3.status()["agent"]["pid"])], check=True)
        wait_for(lambda: not n3.agent_running(), 30)
        creds = Path(n3.lab.node("n3").root) / "home/.local/share/lanray-tui/cluster.json"
        creds.unlink()  # this node now makes a new cluster: the running head is another's
        p = n3.lanray("host", "--headless", "--detach", timeout=180)
        assert p.returncode != 0
        err = p.stderr.strip().splitlines()
        assert len(err) == 1, p.stderr
        assert f"Ray already runs on this node (pid {ray_pid}) for another cluster" in err[0]
        assert "lanray-tui leave --force" in err[0]

        p = n3.lanray("leave", "--force", timeout=90)
        assert p.returncode == 0, p.stderr
        assert f"stopped this node's Ray (pid {ray_pid})" in p.stdout
        assert n3.run(["kill", "-0", str(ray_pid)]).returncode != 0
        p = n3.lanray("leave", "--force", timeout=30)
        assert p.returncode == 1 and "nothing to leave" in p.stderr

        n3.lanray("host", "--headless", "--detach", check=True, timeout=180)
        assert recorded_ray(n3) != ray_pid
    finally:
        n3.leave()


def test_the_foreground_agent_supervises_ray_and_stops_it_on_sigterm(lab: Any) -> None:
    """What a systemd unit runs: 'lanray-tui agent --role host' in the foreground."""
    import subprocess

    from tests.helpers.labkit import LANRAY

    n3 = Node(lab, "n3")
    agent = n3.popen([*LANRAY, "agent", "--role", "host"], stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: n3.agent_running() and n3.status()["agent"]["state"] == "ready", 120)
        first = recorded_ray(n3)
        n3.run(["kill", "-9", str(first)], check=True)
        wait_for(lambda: recorded_ray(n3) != first, 60)
        wait_for(lambda: n3.status()["agent"]["state"] == "ready", 120)
        second = recorded_ray(n3)
        pid = int(n3.status()["agent"]["pid"])
        n3.run(["kill", "-TERM", str(pid)], check=True)
        out, _ = agent.communicate(timeout=90)
        assert agent.returncode == 0, out[-2000:]
        assert "restarting Ray" in out
        assert n3.run(["kill", "-0", str(second)]).returncode != 0  # its Ray stopped too
        assert not n3.agent_running()
    finally:
        if agent.poll() is None:
            agent.kill()
        n3.leave()
