"""A Ray driver: one task pinned to each ALIVE node; prints {node_ip: task_ip} as JSON."""

import json
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False)


@ray.remote(num_cpus=0)
def where() -> str:
    return ray.util.get_node_ip_address()


nodes = [n for n in ray.nodes() if n["Alive"]]
refs = {
    n["NodeManagerAddress"]: where.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
    ).remote()
    for n in nodes
}
print(json.dumps({ip: ray.get(ref, timeout=60) for ip, ref in refs.items()}))
