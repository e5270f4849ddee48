"""Ray's GCS asked over Ray's own gRPC (mutual TLS and the token), in a child process.

A worker has no dashboard to ask (it listens on the head's loopback only), but it reaches
the head's GCS like every Ray process of the cluster. The child loads Ray, so that the caller
(the agent) never does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from ..core.types import LanrayError, NodeInfo
from . import ray_process

IMPORT_S = 15.0  # what loading Ray in the child may take on a busy machine


class GcsError(LanrayError):
    """The GCS could not be asked, with the reason in one line."""


def list_nodes(
    gcs_address: str, token: str, tls_env: Mapping[str, str], timeout: float = 5.0
) -> list[NodeInfo]:
    """Every node the GCS knows, dead ones included (as the dashboard's node list)."""
    argv = [sys.executable, "-m", __name__, "nodes", gcs_address, str(timeout)]
    env = ray_process.auth_env(token, tls_env)
    try:
        p = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout + IMPORT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GcsError(f"the cluster's GCS at {gcs_address} did not answer in time") from None
    except OSError as exc:
        raise GcsError(f"cannot ask the cluster's GCS: {exc}") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()]
        why = lines[-1].strip()[:300] if lines else f"exit code {p.returncode}"
        raise GcsError(f"cannot ask the cluster's GCS at {gcs_address}: {why}")
    try:
        rows = json.loads(p.stdout.strip().splitlines()[-1])
        return [NodeInfo.from_ray(r) for r in rows]
    except (ValueError, IndexError, TypeError, AttributeError):
        raise GcsError("the GCS's node list has an unexpected shape") from None


def _nodes_main(gcs_address: str, timeout: str) -> int:
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    rows: list[dict[str, Any]] = []
    for node_id, info in (
        GcsClient(address=gcs_address).get_all_node_info(timeout=float(timeout)).items()
    ):
        rows.append(
            {
                "node_id": node_id.hex(),
                "node_ip": info.node_manager_address,
                "node_name": info.node_name,
                "is_head_node": bool(info.is_head_node),
                "state": "ALIVE" if info.state == 0 else "DEAD",
                "resources_total": dict(info.resources_total),
                "labels": dict(info.labels),
            }
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "nodes":
        try:
            raise SystemExit(_nodes_main(sys.argv[2], sys.argv[3]))
        except Exception as exc:  # Ray's errors: one line for the parent
            print(" ".join(str(exc).split())[:300] or type(exc).__name__, file=sys.stderr)
            raise SystemExit(1) from None
    print("usage: python -m lanray_tui.adapters.ray_gcs nodes GCS TIMEOUT", file=sys.stderr)
    raise SystemExit(2)
