"""Run on a lab cluster's host: the tasks and actors Ray placed on the node at IP (every
Ray node it has had), with the wall time each started, from the head's state API. Prints
one JSON list.

    python placed_on.py IP
"""

from __future__ import annotations

import json
import sys

from lanray_tui.adapters import ray_dashboard
from lanray_tui.core import config, credentials


def main(ip: str) -> int:
    creds = credentials.load(config.load().paths().credentials)
    if creds is None:
        print("this node has no cluster credentials", file=sys.stderr)
        return 1
    url, token = creds.dashboard_url, creds.token
    out = []
    for node in ray_dashboard.list_nodes(url, token, 10):
        if node.ip != ip:
            continue
        query = (
            "limit=10000&detail=true"
            f"&filter_keys=node_id&filter_predicates=%3D&filter_values={node.node_id}"
        )
        doc = ray_dashboard.get_json(f"{url}/api/v0/tasks?{query}", token, 30)
        for t in doc["data"]["result"]["result"]:
            out.append(
                {
                    "type": t.get("type"),
                    "name": t.get("name"),
                    "state": t.get("state"),
                    "start_s": (t.get("start_time_ms") or 0) / 1000,
                }
            )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
