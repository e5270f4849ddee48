"""Issues 2 and 17 benchmark: lanray-tui host/join (mutual TLS on, the default) against bare
`ray start` with the same flags and token auth, WITHOUT TLS.

In a 2-node lab, 5 runs each, interleaved:
  a. `lanray-tui host --headless --detach` until ready  vs  `ray start --head` + node ALIVE
  b. `lanray-tui join --token -` (the authenticated token exchange, a certificate, Ray with
     TLS) until the head lists it  vs  `ray start --address` + ALIVE against a bare head
Both sides use the same readiness check (the head's state API lists the node ALIVE). Bare Ray
serves its dashboard on the node's address, as Ray does by default (lanray-tui keeps it on
the head's loopback).

    python bench/host_join.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import LANRAY, bench_lab, checked, last_json, median, on_node, stop_node_processes

INSIDE = os.path.abspath(__file__)


# ----- what runs inside a lab node ----------------------------------------------------------


def inside(mode: str, head: str, token: str) -> None:
    """Time one start inside this node; print {"seconds": ...}."""
    from lanray_tui.adapters import ray_dashboard
    from lanray_tui.core import config
    from lanray_tui.core.agent.ray_start import ray_spec

    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    cfg = config.load()
    from lanray_tui.core import netinfo

    me = netinfo.lan_interfaces()[0].address
    role = "host" if mode.endswith("head") else "worker"
    t0 = time.perf_counter()
    if mode == "lanray-head":
        p = subprocess.run([*LANRAY, "host", "--headless", "--detach"], capture_output=True)
    elif mode == "lanray-join":
        p = subprocess.run(
            [*LANRAY, "join", head, "--token", "-", "--headless", "--detach"],
            input=token.encode(),
            capture_output=True,
        )
    else:
        # the very flags the agent would use, without --block; Ray's default dashboard host
        spec = ray_spec(cfg, cfg.paths(), role == "host", me, f"{head}:6379")
        argv = [a for a in spec.argv() if a != "--block"]
        argv = [me if a == "127.0.0.1" and argv[i - 1] == "--dashboard-host" else a
                for i, a in enumerate(argv)]  # fmt: skip
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}  # token auth, no TLS
        p = subprocess.run(argv, capture_output=True, env=env)
    if p.returncode != 0:
        print(json.dumps({"error": (p.stderr or p.stdout).decode()[-300:]}))
        return
    if mode.startswith("lanray"):
        # lanray-tui returns only once the head's state API lists the node ALIVE: the same
        # check the loop below applies to bare Ray.
        print(json.dumps({"seconds": time.perf_counter() - t0}))
        return
    url = f"http://{head}:8265"
    while True:
        try:
            nodes = ray_dashboard.list_nodes(url, token, 2.0)
            if any(
                n.ip == me and n.state == "ALIVE" and (n.role == "head") == (role == "host")
                for n in nodes
            ):
                break
        except Exception:
            pass
        time.sleep(0.05)
    print(json.dumps({"seconds": time.perf_counter() - t0}))


# ----- the orchestration ----------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--inside", nargs=3, metavar=("MODE", "HEAD", "TOKEN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(*args.inside)
        return 0
    py = sys.executable
    times: dict[str, list[float]] = {
        k: [] for k in ("lanray-head", "bare-head", "lanray-join", "bare-join")
    }
    with bench_lab("bhj", 2) as lab:
        head = lab.node("n1").address

        def timed(node: str, mode: str, token: str) -> float:
            out = last_json(
                checked(on_node(lab, node, [py, INSIDE, "--inside", mode, head, token]), mode)
            )
            if "error" in out:
                raise SystemExit(
                    f"host_join.py: error: {mode}: {out['error'].strip().splitlines()[-1]}"
                )
            return float(out["seconds"])

        def ray_stop(node: str) -> None:
            stop_node_processes(lab, node)

        token = "b" * 64
        for i in range(args.runs):
            # a. head: lanray then bare (order alternates between runs)
            order = ("lanray-head", "bare-head") if i % 2 == 0 else ("bare-head", "lanray-head")
            for mode in order:
                if mode == "lanray-head":
                    times[mode].append(timed("n1", mode, "unused"))
                    checked(on_node(lab, "n1", [*LANRAY, "leave"]), "leave")
                else:
                    times[mode].append(timed("n1", mode, token))
                    ray_stop("n1")
            # b. lanray-tui joins a head lanray-tui started (TLS); bare Ray joins a bare head
            order = ("lanray-join", "bare-join") if i % 2 == 0 else ("bare-join", "lanray-join")
            for mode in order:
                if mode == "lanray-join":
                    checked(on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]), "host")
                    real = checked(on_node(lab, "n1", [*LANRAY, "token"]), "token").strip()
                    times[mode].append(timed("n2", mode, real))
                    checked(on_node(lab, "n2", [*LANRAY, "leave"]), "leave")
                    checked(on_node(lab, "n1", [*LANRAY, "leave"]), "leave")
                else:
                    timed("n1", "bare-head", token)
                    times[mode].append(timed("n2", mode, token))
                    ray_stop("n2")
                    ray_stop("n1")
            print(
                f"run {i + 1}/{args.runs}: "
                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                file=sys.stderr,
            )
    med = {k: median(v) for k, v in times.items()}
    result = {
        "host_ratio": round(med["lanray-head"] / med["bare-head"], 3),
        "join_ratio": round(med["lanray-join"] / med["bare-join"], 3),
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "runs": args.runs,
    }
    print(
        f"host: lanray-tui {med['lanray-head']:.2f} s vs ray start --head {med['bare-head']:.2f} s"
        f"  -> ratio {result['host_ratio']:.3f} (goal <= 1.10)"
    )
    print(
        f"join: lanray-tui {med['lanray-join']:.2f} s vs "
        f"ray start --address {med['bare-join']:.2f} s"
        f"  -> ratio {result['join_ratio']:.3f} (goal <= 1.10)"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
