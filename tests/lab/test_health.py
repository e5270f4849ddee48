"""Issue 7 in the lab: fast UNREACHABLE, automatic rejoin, worker restart, pause/resume."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import needs_root
from tests.helpers.labkit import LANRAY, Node, wait_for

pytestmark = needs_root
LONG = Path(__file__).resolve().parents[1] / "drivers" / "long_tasks.py"


def row(host: Node, ip: str) -> dict[str, Any]:
    """The current row of ``ip`` in the host's status (ALIVE wins over older DEAD rows)."""
    rows = [n for n in host.status()["nodes"] if n["ip"] == ip]
    rows.sort(key=lambda n: n["state"] != "ALIVE")
    return rows[0] if rows else {}


def test_cut_link_is_unreachable_fast_and_rejoins_by_itself(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    lab = n1.lab
    from lanray_tui.core import lab as labmod

    assert row(n1, n2.address)["link"] == "UP"
    labmod.link(lab, "n2", up=False)
    cut = time.monotonic()
    try:
        wait_for(lambda: row(n1, n2.address).get("link") == "UNREACHABLE", timeout=8)
        assert time.monotonic() - cut <= 5.5
        assert row(n1, n2.address)["state"] == "ALIVE"  # Ray has not noticed: both shown
    finally:
        labmod.link(lab, "n2", up=True)
    back = time.monotonic()
    wait_for(
        lambda: (r := row(n1, n2.address)).get("state") == "ALIVE" and r.get("link") == "UP",
        timeout=25,
    )
    assert time.monotonic() - back <= 20
    assert row(n1, n2.address)["name"] == "n2"


def test_killed_ray_worker_is_restarted(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    before = row(n1, n2.address)["node_id"]
    n2.run(["pkill", "-9", "-f", "ray/core/src/ray/raylet/raylet"], check=True)
    wait_for(
        lambda: (r := row(n1, n2.address)).get("state") == "ALIVE" and r["node_id"] != before,
        timeout=60,
    )
    wait_for(lambda: n2.status()["agent"]["state"] == "ready", timeout=30)


def test_pause_drains_without_losing_tasks_and_resume_rejoins(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    env = n1.ray_env(n1.token())
    driver = n1.popen(
        [LANRAY[0], str(LONG), f"{n1.address}:6379", n1.address, "4", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        assert driver.stdout is not None
        wait_for(lambda: "started" in driver.stdout.readline(), timeout=60, interval=0)
        time.sleep(2)  # tasks are running on both nodes now
        p = n2.lanray("pause", "--deadline", "20", timeout=120)
        assert p.returncode == 0, p.stderr
        wait_for(lambda: row(n1, n2.address).get("state") != "ALIVE", timeout=15)
        agent = n2.status()["agent"]
        assert agent["state"] == "paused" and agent["lending"]["state"] == "paused"
        for _ in range(5):  # the host shows why, never DEAD: n2's agent still beats
            seen = row(n1, n2.address)
            assert seen["state"] == "WITHHELD" and seen["link"] == "UP", seen
            assert seen["lending"] == {"state": "paused", "reason": "paused by hand"}
            time.sleep(1)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-3000:]
    # Ray may print warnings after the result (stderr is merged): take the JSON line
    results = json.loads(next(ln for ln in out.splitlines() if ln.startswith("[{")))
    assert sorted(r["i"] for r in results) == [0, 1, 2, 3]  # no task lost
    assert n2.lanray("resume").returncode == 0
    wait_for(lambda: row(n1, n2.address).get("state") == "ALIVE", timeout=60)
    assert row(n1, n2.address)["lending"]["state"] == "lending"
    rows = [n for n in n1.status()["nodes"] if n["ip"] == n2.address]
    assert len(rows) == 1 and rows[0]["ray_restarts"] >= 1  # one row per machine


def test_restart_and_stop_by_hand_keep_the_agent(cluster: dict[str, Any]) -> None:
    """What the TUI's R and S keys do: a fresh Ray at once; Ray stopped until resume."""
    n1, n2 = cluster["n1"], cluster["n2"]
    before = row(n1, n2.address)["node_id"]
    p = n2.lanray("restart", timeout=60)
    assert p.returncode == 0, p.stderr
    wait_for(
        lambda: (r := row(n1, n2.address)).get("state") == "ALIVE" and r["node_id"] != before,
        timeout=60,
    )
    wait_for(lambda: n2.status()["agent"]["state"] == "ready", timeout=30)
    p = n2.lanray("stop", "--deadline", "5", timeout=120)
    assert p.returncode == 0 and "resume" in p.stdout, p.stderr
    wait_for(lambda: row(n1, n2.address).get("state") != "ALIVE", timeout=15)
    agent = n2.status()["agent"]
    assert agent["state"] == "paused" and agent["lending"]["state"] == "stopped"
    p = n2.lanray("restart", timeout=30)  # nothing to restart: one line saying why
    assert p.returncode == 1 and "resume" in p.stderr and len(p.stderr.splitlines()) == 1
    assert n2.lanray("resume", timeout=30).returncode == 0
    wait_for(lambda: row(n1, n2.address).get("state") == "ALIVE", timeout=60)
    wait_for(lambda: n2.status()["agent"]["state"] == "ready", timeout=30)
