"""Ray's dashboard HTTP API (state API, cluster status), with the cluster token: on the head's
loopback only (``ray start --dashboard-host 127.0.0.1``).

Plain urllib: the agent and the CLI never import ``ray`` just to ask who is in the cluster.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..core.types import LanrayError, NodeInfo


class DashboardError(LanrayError):
    """The dashboard could not be asked, with the reason in one line."""


class DashboardUnreachable(DashboardError):
    """Nothing answers at the dashboard's address (not up yet, or not on this node)."""


def get_json(url: str, token: str, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise DashboardError(f"the Ray dashboard refused the token (HTTP {exc.code})") from None
        raise DashboardError(f"the Ray dashboard answered HTTP {exc.code} for {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DashboardUnreachable(f"cannot reach the Ray dashboard at {url}: {reason}") from None
    except ValueError:
        raise DashboardError(f"the Ray dashboard sent something that is not JSON ({url})") from None


def list_nodes(base_url: str, token: str, timeout: float = 5.0) -> list[NodeInfo]:
    """Every node Ray knows, dead ones included."""
    doc = get_json(f"{base_url}/api/v0/nodes?limit=1000&detail=false", token, timeout)
    try:
        rows = doc["data"]["result"]["result"]
    except (KeyError, TypeError):
        raise DashboardError("the Ray dashboard's node list has an unexpected shape") from None
    return [NodeInfo.from_ray(r) for r in rows]


def resource_usage(
    base_url: str, token: str, timeout: float = 5.0
) -> dict[str, tuple[float, float]]:
    """Cluster-wide ``{resource: (used, total)}`` from the autoscaler's report (may be empty
    for a few seconds after the head starts)."""
    doc = get_json(f"{base_url}/api/cluster_status", token, timeout)
    try:
        usage = doc["data"]["clusterStatus"]["loadMetricsReport"]["usage"] or {}
        return {k: (float(v[0]), float(v[1])) for k, v in usage.items()}
    except (KeyError, TypeError, ValueError, IndexError):
        return {}


def running_tasks(base_url: str, token: str, node_id: str, timeout: float = 5.0) -> int:
    """How many tasks run on ``node_id`` now (the state API's task table)."""
    query = (
        "limit=1000&detail=false"
        f"&filter_keys=node_id&filter_predicates=%3D&filter_values={node_id}"
        "&filter_keys=state&filter_predicates=%3D&filter_values=RUNNING"
    )
    doc = get_json(f"{base_url}/api/v0/tasks?{query}", token, timeout)
    try:
        return int(doc["data"]["result"]["total"])
    except (KeyError, TypeError, ValueError):
        raise DashboardError("the Ray dashboard's task list has an unexpected shape") from None
