"""Issue 18 benchmark: how fast a crashed host agent comes back, against restarting Ray.

In a 1-node lab, N runs side by side:
  a. agent_recover_s: SIGKILL the host agent, run `lanray-tui host --headless --detach` again
     and time until `status --json` answers with the agent ready (it adopts the running head);
  b. bare_restart_s: the same head brought back the bare way, `ray stop --force` then
     `ray start --head` with the same flags, until the head's state API lists it ALIVE.
Also agent_rss_mb: the idle host agent's resident memory.

    python bench/recovery.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from _common import LANRAY, bench_lab, checked, die, last_json, median, on_node

INSIDE = os.path.abspath(__file__)


def inside(mode: str) -> None:
    """One timed recovery inside the node; prints {"seconds": ...}."""
    import subprocess

    from lanray_tui.adapters import ray_dashboard, ray_process
    from lanray_tui.core import config, credentials, ray_tls
    from lanray_tui.core.agent.ray_start import ray_spec

    status = json.loads(subprocess.run([*LANRAY, "status", "--json"], capture_output=True,
                                       text=True, check=True).stdout)  # fmt: skip
    if mode == "rss":  # the idle agent's resident memory, read in its own PID namespace
        import psutil

        rss = psutil.Process(int(status["agent"]["pid"])).memory_info().rss
        print(json.dumps({"rss_mb": rss / 2**20}))
        return
    cfg = config.load()
    paths = cfg.paths()
    creds = credentials.load(paths.credentials)
    assert creds is not None
    os.kill(int(status["agent"]["pid"]), 9)
    time.sleep(0.5)
    t0 = time.perf_counter()
    if mode == "agent":
        p = subprocess.run([*LANRAY, "host", "--headless", "--detach"], capture_output=True)
        if p.returncode != 0:
            print(json.dumps({"error": p.stderr.decode()[-300:]}))
            return
        while True:
            p = subprocess.run([*LANRAY, "status", "--json"], capture_output=True, text=True)
            if p.returncode == 0 and json.loads(p.stdout)["agent"]["state"] == "ready":
                break
            time.sleep(0.05)
    else:
        env = ray_process.auth_env(creds.token, ray_tls.ray_env(paths.tls_dir))
        subprocess.run([ray_process.ray_executable(), "stop", "--force"], capture_output=True)
        spec = ray_spec(cfg, paths, True, creds.head_address, creds.gcs_address)
        argv = [a for a in spec.argv() if a != "--block"]
        p = subprocess.run(argv, capture_output=True, env=env)
        if p.returncode != 0:
            print(json.dumps({"error": p.stderr.decode()[-300:]}))
            return
        while True:
            try:
                nodes = ray_dashboard.list_nodes(creds.dashboard_url, creds.token, 2.0)
                if any(n.role == "head" and n.state == "ALIVE" for n in nodes):
                    break
            except Exception:
                pass
            time.sleep(0.05)
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--inside", metavar="MODE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args.inside)
        return 0
    py = sys.executable
    times: dict[str, list[float]] = {"agent": [], "bare": []}
    rss: list[float] = []
    with bench_lab("brec", 1) as lab:
        for i in range(args.runs):
            order = ("agent", "bare") if i % 2 == 0 else ("bare", "agent")
            for mode in order:
                checked(on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]), "host")
                if mode == "agent" and not rss:
                    time.sleep(5)  # idle
                    out = checked(on_node(lab, "n1", [py, INSIDE, "--inside", "rss"]), "rss")
                    rss.append(float(last_json(out)["rss_mb"]))
                out = last_json(checked(on_node(lab, "n1", [py, INSIDE, "--inside", mode]), mode))
                if "error" in out:
                    die(f"{mode}: {out['error'].strip().splitlines()[-1]}")
                times[mode].append(float(out["seconds"]))
                if mode == "agent":
                    checked(on_node(lab, "n1", [*LANRAY, "leave"]), "leave")
                else:
                    on_node(
                        lab, "n1", [os.path.join(os.path.dirname(py), "ray"), "stop", "--force"]
                    )
            print(f"run {i + 1}/{args.runs}: agent {times['agent'][-1]:.2f} s, "
                  f"bare {times['bare'][-1]:.2f} s", file=sys.stderr)  # fmt: skip
    med = {k: median(v) for k, v in times.items()}
    result = {
        "agent_recover_s": round(med["agent"], 3),
        "bare_restart_s": round(med["bare"], 3),
        "recover_ratio": round(med["agent"] / med["bare"], 3),
        "agent_rss_mb": round(rss[0], 1),
        "runs": args.runs,
    }
    print(f"agent recovers in {med['agent']:.2f} s vs bare restart {med['bare']:.2f} s "
          f"-> ratio {result['recover_ratio']:.3f} (goal <= 0.5); "
          f"idle agent RSS {result['agent_rss_mb']} MiB (goal <= 60)")  # fmt: skip
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
