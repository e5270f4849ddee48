"""The agent reports its own memory and Ray's, for status --json and the node details."""

from __future__ import annotations

import subprocess
import sys

from lanray_tui.core import config
from lanray_tui.core.agent.ray_start import RayStarter
from lanray_tui.core.agent.state import NodeState, Role
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.models import node_from_status


def test_runtime_view_carries_agent_and_ray_memory() -> None:
    cfg = config.load()
    starter = RayStarter(cfg, cfg.paths(), NodeState(role=Role.HOST, creds=Credentials.new("t")))
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 << 20); "
                              "time.sleep(30)"])  # fmt: skip
    try:
        import time

        time.sleep(1.0)
        view = starter.runtime_view(None, False)
        assert view["kind"] == "native" and view["agent_mb"] > 10 and view["ray_mb"] is None
        mem = starter.memory(child.pid)  # Ray started since: read at once, not in 5 s
        assert mem["ray_mb"] is not None and mem["ray_mb"] >= 60  # the child's 64 MiB
        assert starter.memory(child.pid) is mem  # then kept a few seconds
    finally:
        child.kill()
        child.wait()
    row = {"node_id": "x", "ip": "10.0.0.1", "name": "n", "role": "head", "state": "ALIVE",
           "cpus": 1.0, "gpus": 0.0, "memory_gb": 1.0, "ray_restarts": 2,
           "runtime": {"kind": "native", "agent_mb": 41.5, "ray_mb": 250.0}}  # fmt: skip
    node = node_from_status(row)
    assert (node.agent_mb, node.ray_mb, node.ray_restarts) == (41.5, 250.0, 2)
