"""Lending with an end time, for real: ``join --for 20s`` lends the machine for 20 seconds;
the host shows "lending until ..." meanwhile, then the node drains, leaves, and the host
sees it go."""

from __future__ import annotations

import time
from typing import Any

from tests.helpers.labkit import wait_for


def test_join_for_twenty_seconds_then_the_node_leaves(cluster: dict[str, Any]) -> None:
    n1, n3 = cluster["n1"], cluster["n3"]
    n3.leave()
    t0 = time.monotonic()
    n3.join_by_token(n1, "--headless", "--detach", "--for", "20s", check=True, timeout=180)
    try:

        def row() -> dict[str, Any] | None:
            rows = [n for n in n1.status()["nodes"] if n["ip"] == n3.address]
            alive = [n for n in rows if n["state"] == "ALIVE"]
            return alive[0] if alive else None

        lent = wait_for(row, timeout=60, interval=0.5)
        assert lent["lending"]["until"].startswith("until "), lent["lending"]
        assert n3.status()["agent"]["lending"]["until"] == lent["lending"]["until"]
        # then, about 20 s after the join: drained, left, and the host sees it go
        wait_for(lambda: not n3.agent_running(), timeout=90, interval=1.0)
        took = time.monotonic() - t0
        assert 18 <= took <= 90, took
        wait_for(lambda: row() is None, timeout=60, interval=1.0)
        log = (n3.lab.node("n3").root / "home/.local/state/lanray-tui/agent.log").read_text()
        assert "the lending time is up" in log
    finally:
        n3.leave()
