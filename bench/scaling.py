"""Scaling benchmark: the sample jobs on 1 node and on 2 nodes of 1 CPU each.

In a 2-node lab where each node is a machine of 1 CPU (the lab gives each node a CPU of its
own, and its Ray lends that 1 CPU), n1 hosts. Each run measures n1 alone, then n1 with n2
(which joins for it and leaves after it), through `lanray-tui submit --follow`:
  a. sample_jobs/parallel_map.py --skip-sequential: the time of the Ray map
  b. sample_jobs/train_digits.py --skip-baseline --workers 1|2: the time of the training
     loop (Ray Train's start-up excluded, reported apart) and the final test accuracy, with
     train_digits' default (models averaged at each epoch's end), then with --sync step
     (gradients averaged at every step, PyTorch DDP) for comparison
Speed-up = time on 1 node / time on 2 nodes (median of --runs runs of each). Each job starts
once the machine's CPUs are nearly idle (a node that has just joined is still starting Ray's
agents), so the figures are those of a cluster at work, not of one still starting.

Each run then does the same work without Ray (bench/_plain.py): plain processes pinned to
n1's CPU, then to n1's and n2's at once (the map in halves; the training loop as
train_digits' default, under plain torch.distributed), while n1's Ray stays up, idle, as it
is for the Ray runs. Those speed-ups are
what this machine gives by itself when both of its CPUs work at once: the ceiling for Ray's.

    python bench/scaling.py [--runs N] [--epochs N] [--quick] [--shared-cpus] [--json]

--quick runs only parallel_map (under 3 minutes). --shared-cpus lets both nodes run on all
of this machine's CPUs, as before nodes had CPUs of their own: n1 alone then has a second
core for its Ray's background work, which no 1-CPU machine has.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from _common import (
    LANRAY,
    bench_lab,
    checked,
    die,
    host_on_n1,
    median,
    on_node,
    result_of,
    settle,
    stop_node_processes,
)
from _plain import ddp_times, map_times

from lanray_tui.adapters.ray_process import ray_executable


def medians(runs: dict[int, list[dict[str, Any]]], key: str) -> tuple[float, float]:
    """The median of ``key`` over the runs on 1 node, and over those on 2."""
    return median([r[key] for r in runs[1]]), median([r[key] for r in runs[2]])


def speedup(runs: dict[int, list[dict[str, Any]]]) -> tuple[float, float, float, float]:
    """Median training seconds on 1 and on 2, then median accuracy on 1 and on 2."""
    return (*medians(runs, "train_s"), *medians(runs, "accuracy"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, help="runs of each (default: 5, 3 with --quick)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="only parallel_map")
    ap.add_argument("--shared-cpus", action="store_true", help="nodes share all CPUs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tls-off", action="store_true", help="also the map on bare Ray without TLS")
    args = ap.parse_args()
    args.runs = args.runs or (3 if args.quick else 5)

    pm: dict[int, list[float]] = {1: [], 2: []}
    train: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    train_step: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    plain_pm: dict[int, list[float]] = {1: [], 2: []}
    bare_pm: dict[int, list[float]] = {1: [], 2: []}  # bare Ray, no TLS
    plain_train: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with bench_lab("bsc", 2, cpus_per_node=0 if args.shared_cpus else 1) as lab:

        def submit(script: str, *argv: str, timeout: float = 600) -> dict[str, Any]:
            p = on_node(
                lab,
                "n1",
                [*LANRAY, "submit", f"sample_jobs/{script}", "--follow", "--", *argv],
                timeout=timeout,
            )
            return result_of(p.stdout, script)

        def measure(nodes: int, run: int) -> None:
            settle()
            got = submit("parallel_map.py", "--skip-sequential")
            if got["cpus"] != nodes:
                die(f"expected {nodes} CPU(s) in the cluster, Ray has {got['cpus']}")
            pm[nodes].append(float(got["ray_s"]))
            print(
                f"run {run}, {nodes} node(s): parallel_map {got['ray_s']:.2f} s "
                f"on {got['nodes']} node(s)",
                file=sys.stderr,
            )
            if args.quick:
                return
            for sync, into in (("epoch", train), ("step", train_step)):
                settle()
                got = submit(
                    "train_digits.py",
                    "--skip-baseline",
                    "--workers",
                    str(nodes),
                    "--epochs",
                    str(args.epochs),
                    "--sync",
                    sync,
                )
                into[nodes].append(got["parallel"])
                print(
                    f"run {run}, {nodes} node(s): train_digits loop (--sync {sync}) "
                    f"{got['parallel']['train_s']:.2f} s "
                    f"(wall {got['parallel']['wall_s']:.1f} s), "
                    f"accuracy {got['parallel']['accuracy']:.4f}",
                    file=sys.stderr,
                )

        def measure_plain(cpus: tuple[int, int], run: int) -> None:
            settle()
            one, two = map_times(cpus)
            plain_pm[1].append(one)
            plain_pm[2].append(two)
            print(f"run {run}, plain: map {one:.2f} s vs {two:.2f} s", file=sys.stderr)
            if args.quick:
                return
            settle()
            got = ddp_times(cpus, args.epochs)
            for k in (1, 2):
                plain_train[k].append(got[str(k)])
            print(
                f"run {run}, plain: training loop {got['1']['train_s']:.2f} s vs "
                f"{got['2']['train_s']:.2f} s, accuracy {got['1']['accuracy']:.4f} vs "
                f"{got['2']['accuracy']:.4f}",
                file=sys.stderr,
            )

        def measure_bare(run: int) -> None:
            """The map on bare Ray with token auth and no TLS (1 node, then 2), the driver
            on n1 as lanray-tui's job driver runs on the head."""
            bare = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "b" * 64,
                    "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
            head = lab.node("n1").address
            for node in ("n1", "n2"):
                argv = [ray_executable(), "start", "--num-cpus", "1",
                        "--disable-usage-stats", "--node-ip-address", lab.node(node).address,
                        "--temp-dir", str(lab.node(node).root / "ray")]  # fmt: skip
                gcs = f"{head}:6379"
                argv += ["--head", "--port", "6379"] if node == "n1" else ["--address", gcs]
                if node == "n2":
                    settle()
                    bare_pm[1].append(bare_map(bare, head))
                checked(on_node(lab, node, argv, env=bare), f"bare ray start on {node}")
            settle()
            bare_pm[2].append(bare_map(bare, head))
            print(f"run {run}, bare Ray without TLS: map {bare_pm[1][-1]:.2f} s vs "
                  f"{bare_pm[2][-1]:.2f} s", file=sys.stderr)  # fmt: skip
            for node in ("n2", "n1"):
                stop_node_processes(lab, node)

        def bare_map(env: dict[str, str], head: str) -> float:
            p = on_node(lab, "n1", [sys.executable, "sample_jobs/parallel_map.py",
                                    "--skip-sequential"],
                        env={**env, "RAY_ADDRESS": f"{head}:6379"}, timeout=600)  # fmt: skip
            lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
            if p.returncode != 0 or not lines:
                die(f"parallel_map on bare Ray failed: {(p.stderr or p.stdout)[-300:]}")
            return float(json.loads(lines[-1])["ray_s"])

        if args.tls_off:
            for run in range(1, args.runs + 1):
                measure_bare(run)
        join = host_on_n1(lab, cpus=1)
        # Side by side: each run measures n1 alone, then n1 with n2 (which joins for it and
        # leaves after it), so that drift in this machine's speed hits both alike.
        cpus = (lab.node("n1").cpus + lab.node("n2").cpus)[:2]
        for run in range(1, args.runs + 1):
            measure(1, run)
            checked(on_node(lab, "n2", join), "join")
            measure(2, run)
            checked(on_node(lab, "n2", [*LANRAY, "leave"]), "leave")
            if len(cpus) == 2:
                try:
                    measure_plain(cpus, run)
                except RuntimeError as exc:
                    die(f"the run without Ray failed: {exc}")
        on_node(lab, "n1", [*LANRAY, "leave"])

    result: dict[str, Any] = {
        "parallel_map_speedup": round(median(pm[1]) / median(pm[2]), 3),
        "parallel_map_s": {str(k): round(median(v), 3) for k, v in pm.items()},
        "runs": args.runs,
        "cpus_per_node": "shared" if args.shared_cpus else 1,
    }
    print(
        f"parallel_map: 1 node {median(pm[1]):.2f} s, 2 nodes {median(pm[2]):.2f} s "
        f"-> speed-up {result['parallel_map_speedup']:.2f}x"
    )
    if bare_pm[1]:
        result["parallel_map_bare_no_tls_s"] = {
            str(k): round(median(v), 3) for k, v in bare_pm.items()
        }
        result["parallel_map_bare_no_tls_speedup"] = round(
            median(bare_pm[1]) / median(bare_pm[2]), 3
        )
        result["tls_map_cost"] = round(median(pm[2]) / median(bare_pm[2]), 3)
        print(
            f"  the same map on bare Ray without TLS: 1 node {median(bare_pm[1]):.2f} s, "
            f"2 nodes {median(bare_pm[2]):.2f} s -> "
            f"{result['parallel_map_bare_no_tls_speedup']:.2f}x; with TLS (lanray-tui) on "
            f"2 nodes the map takes {result['tls_map_cost']:.2f}x as long"
        )
    if plain_pm[1]:
        result["parallel_map_plain_speedup"] = round(median(plain_pm[1]) / median(plain_pm[2]), 3)
        print(
            f"  the same map in plain processes (no Ray), 1 CPU vs 2: "
            f"{median(plain_pm[1]):.2f} s vs {median(plain_pm[2]):.2f} s "
            f"-> {result['parallel_map_plain_speedup']:.2f}x"
        )
    if not args.quick:
        t1, t2, a1, a2 = speedup(train)
        w1, w2 = medians(train, "wall_s")
        result.update(
            train_speedup=round(t1 / t2, 3),
            train_accuracy_delta=round(a2 - a1, 4),
            train_s={"1": round(t1, 3), "2": round(t2, 3)},
            train_wall_s={"1": round(w1, 3), "2": round(w2, 3)},
            train_accuracy={"1": round(a1, 4), "2": round(a2, 4)},
            epochs=args.epochs,
        )
        print(
            f"train_digits ({args.epochs} epochs): loop 1 node {t1:.2f} s, 2 nodes {t2:.2f} s "
            f"-> speed-up {t1 / t2:.2f}x (wall {w1:.1f} s vs {w2:.1f} s); accuracy "
            f"{a1:.4f} vs {a2:.4f} (delta {a2 - a1:+.4f})"
        )
        s1, s2, sa1, sa2 = speedup(train_step)
        result.update(
            train_step_sync_speedup=round(s1 / s2, 3),
            train_step_sync_accuracy_delta=round(sa2 - sa1, 4),
            train_step_sync_s={"1": round(s1, 3), "2": round(s2, 3)},
        )
        print(
            f"  with --sync step (DDP, gradients averaged at every step): loop {s1:.2f} s vs "
            f"{s2:.2f} s -> {s1 / s2:.2f}x; accuracy {sa1:.4f} vs {sa2:.4f} "
            f"(delta {sa2 - sa1:+.4f})"
        )
        if plain_train[1]:
            p1, p2, pa1, pa2 = speedup(plain_train)
            result.update(
                train_plain_speedup=round(p1 / p2, 3),
                train_plain_accuracy_delta=round(pa2 - pa1, 4),
            )
            print(
                f"  the same loop in plain processes (no Ray), 1 CPU vs 2: "
                f"{p1:.2f} s vs {p2:.2f} s -> {p1 / p2:.2f}x; accuracy delta {pa2 - pa1:+.4f}"
            )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
