"""Tasks that ask for GPUs, and how Ray queues them.

Each task asks for ``--gpus-per-task`` GPUs (default 1). Ray runs only as many at once as
the cluster has GPUs: the rest wait for one to free up, which the start times show. On a
cluster without GPUs it says so, shows that such a task waits (Ray cannot place it), and
runs the same work on CPUs instead, so the job still succeeds. The last line is JSON.

    python gpu_tasks.py [--tasks 4] [--gpus-per-task 1] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from typing import Any

import ray


def busy(seconds: float) -> float:
    """Some work: a matrix product on the GPU when torch sees one, else a CPU loop."""
    t0 = time.perf_counter()
    try:
        import torch

        if torch.cuda.is_available():
            a = torch.randn(2048, 2048, device="cuda")
            while time.perf_counter() - t0 < seconds:
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
            return float(a.sum().item())
    except ImportError:
        pass
    x = 0.0
    while time.perf_counter() - t0 < seconds:
        x += sum(i * 0.5 for i in range(1000))
    return x


def task_body(i: int, seconds: float, t_submit: float) -> dict[str, Any]:
    start = time.time() - t_submit
    busy(seconds)
    return {
        "task": i,
        "start_s": round(start, 2),
        "end_s": round(time.time() - t_submit, 2),
        "node": socket.gethostname(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }


@ray.remote
def on_gpu(i: int, seconds: float, t_submit: float) -> dict[str, Any]:
    return task_body(i, seconds, t_submit)


@ray.remote(num_cpus=1)
def on_cpu(i: int, seconds: float, t_submit: float) -> dict[str, Any]:
    return task_body(i, seconds, t_submit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--gpus-per-task", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=1.0, help="work per task")
    args = ap.parse_args()

    ray.init(logging_level="WARNING")
    gpus = ray.cluster_resources().get("GPU", 0.0)
    cpus = ray.cluster_resources().get("CPU", 0.0)
    print(f"cluster: {gpus:g} GPU(s), {cpus:g} CPU(s)", flush=True)
    t0 = time.time()
    if gpus >= args.gpus_per_task > 0:
        at_once = int(gpus // args.gpus_per_task)
        print(
            f"{args.tasks} tasks of {args.gpus_per_task:g} GPU each: {at_once} run at once, "
            "the others wait for a free GPU",
            flush=True,
        )
        refs = [
            on_gpu.options(num_gpus=args.gpus_per_task).remote(i, args.seconds, t0)
            for i in range(args.tasks)
        ]
        mode = "gpu"
    else:
        print(
            "this cluster has NO GPUs: a task that asks for num_gpus cannot be placed and "
            "would wait forever.",
            flush=True,
        )
        probe = on_gpu.options(num_gpus=args.gpus_per_task).remote(-1, 0.0, t0)
        ready, _ = ray.wait([probe], timeout=2.0)
        print(
            f"  asked for {args.gpus_per_task:g} GPU: "
            f"{'it ran?!' if ready else 'still waiting after 2 s, as expected'}; cancelling it",
            flush=True,
        )
        ray.cancel(probe, force=True)
        at_once = int(cpus) or 1
        print(
            f"running the same {args.tasks} tasks on CPUs instead ({at_once} at once)", flush=True
        )
        t0 = time.time()
        refs = [on_cpu.remote(i, args.seconds, t0) for i in range(args.tasks)]
        mode = "cpu"
    results = sorted(ray.get(refs), key=lambda r: r["start_s"])
    for r in results:
        where = f"GPU {','.join(r['gpu_ids'])}" if r["gpu_ids"] else "CPU"
        print(
            f"  task {r['task']}: started at {r['start_s']:5.2f} s, ended at {r['end_s']:5.2f} s "
            f"on {r['node']} ({where})",
            flush=True,
        )
    waves = len({round(r["start_s"] / max(args.seconds, 0.01)) for r in results})
    print(f"{len(results)} tasks ran in about {waves} wave(s) of up to {at_once}", flush=True)
    print(
        json.dumps({"mode": mode, "gpus": gpus, "tasks": len(results), "waves": waves}), flush=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
