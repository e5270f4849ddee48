"""A Ray driver: N tasks of S seconds each over the cluster; prints JSON with every result."""

import json
import sys
import time

import ray

ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False)
n, seconds = int(sys.argv[3]), float(sys.argv[4])


@ray.remote(num_cpus=1, max_retries=3)
def work(i: int) -> dict:
    time.sleep(seconds)
    return {"i": i, "ip": ray.util.get_node_ip_address()}


print("started", flush=True)
results = ray.get([work.remote(i) for i in range(n)], timeout=600)
print(json.dumps(results), flush=True)
