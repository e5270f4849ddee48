"""A CPU-heavy map over 1,000,000 numbers: once in this process, once as Ray tasks.

Prints the time of each, the speed-up, and which nodes did the work; the last line is JSON.
Runs anywhere: in a lanray-tui job (``lanray-tui submit sample_jobs/parallel_map.py``), or
on its own (it then joins the cluster named by RAY_ADDRESS, or starts a local Ray).

    python parallel_map.py [--n 1000000] [--rounds 10] [--chunks-per-cpu 16]
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from collections import Counter

import ray

MASK = (1 << 32) - 1
N, ROUNDS = 1_000_000, 10  # the defaults: how many numbers, and the cost of each


def work(x: int, rounds: int) -> int:
    """A deliberately slow pure-Python integer hash (the same cost for every number)."""
    h = x & MASK
    for _ in range(rounds):
        h ^= (h << 13) & MASK
        h ^= h >> 17
        h ^= (h << 5) & MASK
        h = (h * 2654435761) & MASK
    return h


def map_chunk(lo: int, hi: int, rounds: int) -> int:
    """The checksum of ``work`` over ``range(lo, hi)``."""
    total = 0
    for x in range(lo, hi):
        total = (total + work(x, rounds)) & MASK
    return total


@ray.remote(num_cpus=1)
def warm_up() -> str:
    """Holds a CPU briefly, so that every node starts its worker before the map is timed."""
    time.sleep(0.3)
    return ray.util.get_node_ip_address()


@ray.remote(num_cpus=1)
def map_chunk_task(lo: int, hi: int, rounds: int) -> tuple[int, str, str, int]:
    return map_chunk(lo, hi, rounds), socket.gethostname(), ray.util.get_node_ip_address(), hi - lo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N, help="how many numbers")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="cost of each number")
    ap.add_argument("--chunks-per-cpu", type=int, default=16)
    ap.add_argument("--skip-sequential", action="store_true", help="only the Ray run")
    args = ap.parse_args()

    ray.init(logging_level="WARNING")
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    nodes = [n for n in ray.nodes() if n["Alive"]]
    print(f"cluster: {len(nodes)} node(s), {cpus} CPU(s)", flush=True)

    seq_s = None
    seq_sum = None
    if not args.skip_sequential:
        t0 = time.perf_counter()
        seq_sum = map_chunk(0, args.n, args.rounds)
        seq_s = time.perf_counter() - t0
        print(f"sequential: {args.n:,} numbers in {seq_s:.2f} s", flush=True)

    # Each node starts a worker for this job (with its working_dir) on first use, about a
    # second: done here, timed apart, so that the map's time is the map's.
    t0 = time.perf_counter()
    warmed = ray.get([warm_up.options(scheduling_strategy="SPREAD").remote() for _ in range(cpus)])
    warm_s = time.perf_counter() - t0
    print(f"workers ready on {len(set(warmed))} node(s) in {warm_s:.2f} s", flush=True)

    chunks = max(1, cpus * args.chunks_per_cpu)
    bounds = [(i * args.n // chunks, (i + 1) * args.n // chunks) for i in range(chunks)]
    t0 = time.perf_counter()
    refs = [
        map_chunk_task.options(scheduling_strategy="SPREAD").remote(lo, hi, args.rounds)
        for lo, hi in bounds
    ]
    results = ray.get(refs)
    ray_s = time.perf_counter() - t0
    ray_sum = 0
    per_node: Counter[str] = Counter()
    for part, host, ip, count in results:
        ray_sum = (ray_sum + part) & MASK
        per_node[f"{host} ({ip})"] += count
    print(f"ray: {args.n:,} numbers in {ray_s:.2f} s as {chunks} tasks", flush=True)
    for node, count in sorted(per_node.items()):
        print(f"  {node}: {count:,} numbers", flush=True)
    speedup = seq_s / ray_s if seq_s else None
    if speedup is not None:
        print(f"speed-up: {speedup:.2f}x on {cpus} CPU(s)", flush=True)
    same = seq_sum is None or seq_sum == ray_sum
    if not same:
        print("error: the two runs disagree", flush=True)
    print(
        json.dumps(
            {
                "n": args.n,
                "cpus": cpus,
                "nodes": len(per_node),
                "sequential_s": seq_s,
                "ray_s": ray_s,
                "warm_up_s": warm_s,
                "speedup": speedup,
                "work_by_node": dict(per_node),
                "checksum_ok": same,
            }
        ),
        flush=True,
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
