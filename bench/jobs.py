"""Jobs benchmark: submit-to-RUNNING latency, lanray-tui's queue against Ray's own CLI.

In a 4-node lab, two clusters side by side: lanray-tui's (n1 hosts, n2 joined; mutual TLS
on, the default) and a bare Ray cluster with token auth and no TLS (n3 `ray start --head`
with the same flags and Ray's default dashboard host, n4 joined). 10 runs each, interleaved:
  a. on n1: `lanray-tui submit DIR/job.py -- MARKER`
  b. on n3: `ray job submit --no-wait --working-dir DIR --runtime-env-json ... -- python job.py
     MARKER` to n3's dashboard
Both upload the same working dir (after the first run the package is already in the cluster,
for both), run the same script with the same environment, and are timed the same way: from
starting the command until Ray's Jobs API lists the job (found by its marker) as RUNNING.
Each job ends before the next run starts. One warm-up run of each is not counted.
`ray job submit` loads Ray and hashes the directory every time; lanray-tui does that only
when a file in it changed since its last upload from this node (and the cluster lost the
package), so in these runs it goes through its queue with one HTTP check instead.

    python bench/jobs.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from _common import LANRAY, bench_lab, checked, last_json, median, on_node, token_file

INSIDE = os.path.abspath(__file__)
BARE_TOKEN = "b" * 64
BARE_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": BARE_TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}
JOB = "import sys, time\nprint('running', sys.argv[1:], flush=True)\ntime.sleep(0.5)\n"


# ----- what runs inside a lab node ----------------------------------------------------------


def inside(mode: str, workdir: str) -> None:
    """Time one submission from this node; print {"seconds": ...}."""
    from lanray_tui.adapters import ray_jobs
    from lanray_tui.adapters.ray_process import ray_executable
    from lanray_tui.core import config, credentials, netinfo

    if mode == "lanray":
        creds = credentials.load(config.load().paths().credentials)
        assert creds is not None
        url, token = creds.dashboard_url, creds.token
    else:  # the bare cluster on this node: Ray's default dashboard host, no TLS
        url, token = f"http://{netinfo.lan_interfaces()[0].address}:8265", BARE_TOKEN
    api = ray_jobs.RayJobs(url, token, timeout=5.0)
    marker = f"m-{uuid.uuid4().hex[:12]}"
    python_dir = os.path.dirname(sys.executable)
    if mode == "lanray":
        argv = [*LANRAY, "submit", os.path.join(workdir, "job.py"), "--", marker]
        env = dict(os.environ)
    else:
        runtime_env = {"env_vars": {"PATH": f"{python_dir}{os.pathsep}${{PATH}}"}}
        argv = [
            ray_executable(),
            "job",
            "submit",
            "--address",
            url,
            "--no-wait",
            "--working-dir",
            workdir,
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "python",
            "job.py",
            marker,
        ]
        env = {**os.environ, **BARE_ENV}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    running_at = None
    submission = ""
    status: object = None
    deadline = t0 + 120
    while time.perf_counter() < deadline:
        for job in _list_jobs(api):
            if marker in str(job.get("entrypoint", "")):
                submission = str(job.get("submission_id") or "")
                if job.get("status") in ("RUNNING", "SUCCEEDED", "FAILED"):
                    running_at = time.perf_counter()
                    status = job.get("status")
        if running_at is not None:
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    if running_at is None or proc.returncode != 0 or status != "RUNNING":
        why = (err or out).decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        print(json.dumps({"error": f"{mode}: {why[0]} (status {status})"}))
        return
    # let it end before the next run (the lanray queue runs one job at a time)
    while time.perf_counter() < deadline:
        try:
            if api.info(submission).status in ray_jobs.TERMINAL:
                break
        except ray_jobs.RayJobsError:
            pass
        time.sleep(0.05)
    print(json.dumps({"seconds": running_at - t0}))


def bare_cluster(lab: object) -> None:
    """Bare Ray on n3 (head) and n4: the agent's own flags, token auth, no TLS."""
    from lanray_tui.core import config
    from lanray_tui.core.agent.ray_start import ray_spec

    cfg = config.load()
    head = lab.node("n3").address  # type: ignore[attr-defined]
    for node, is_head in (("n3", True), ("n4", False)):
        me = lab.node(node).address  # type: ignore[attr-defined]
        spec = ray_spec(cfg, cfg.paths(), is_head, me, f"{head}:6379")
        argv = [a for a in spec.argv() if a != "--block"]
        argv = [me if a == "127.0.0.1" and argv[i - 1] == "--dashboard-host" else a
                for i, a in enumerate(argv)]  # fmt: skip
        # the lab node's own dirs (its HOME): not this process's
        argv = [_node_dir(lab, node) if a == str(spec.temp_dir) else a for a in argv]
        checked(on_node(lab, node, argv, env=BARE_ENV), f"bare ray start on {node}")


def _node_dir(lab: object, node: str) -> str:
    return str(lab.node(node).root / "ray")  # type: ignore[attr-defined]


def _list_jobs(api: object) -> list[dict[str, object]]:
    from lanray_tui.adapters import ray_jobs

    try:
        return api._json("GET", "/api/jobs/")  # type: ignore[attr-defined, no-any-return]
    except ray_jobs.RayJobsError:
        return []


# ----- the orchestration ----------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--inside", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(*args.inside)
        return 0
    py = sys.executable
    times: dict[str, list[float]] = {"lanray": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="lanray-bench-jobs-") as workdir:
        with open(os.path.join(workdir, "job.py"), "w") as f:
            f.write(JOB)
        os.chmod(workdir, 0o755)
        with bench_lab("bjb", 4) as lab:
            checked(on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]), "host")
            token = checked(on_node(lab, "n1", [*LANRAY, "token"]), "token").strip()
            head = lab.node("n1").address
            checked(
                on_node(
                    lab,
                    "n2",
                    [
                        *LANRAY,
                        "join",
                        head,
                        "--token-file",
                        token_file(lab, token),
                        "--headless",
                        "--detach",
                    ],
                ),
                "join",
            )

            bare_cluster(lab)

            def timed(mode: str) -> float:
                node = "n1" if mode == "lanray" else "n3"
                p = on_node(lab, node, [py, INSIDE, "--inside", mode, workdir], timeout=300)
                out = last_json(checked(p, mode))
                if "error" in out:
                    raise SystemExit(f"jobs.py: error: {out['error']}")
                return float(out["seconds"])

            timed("lanray")  # warm-up: uploads the package, starts Ray's job workers
            timed("ray")
            for i in range(args.runs):
                order = ("lanray", "ray") if i % 2 == 0 else ("ray", "lanray")
                for mode in order:
                    times[mode].append(timed(mode))
                print(
                    f"run {i + 1}/{args.runs}: lanray-tui {times['lanray'][-1]:.2f} s, "
                    f"ray job submit {times['ray'][-1]:.2f} s",
                    file=sys.stderr,
                )
            for node in ("n2", "n1"):
                on_node(lab, node, [*LANRAY, "leave"])
    med = {k: median(v) for k, v in times.items()}
    result = {
        "submit_ratio": round(med["lanray"] / med["ray"], 3),
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "min_s": {k: round(min(v), 3) for k, v in times.items()},
        "runs": args.runs,
    }
    print(
        f"submit to RUNNING: lanray-tui {med['lanray']:.2f} s vs ray job submit "
        f"{med['ray']:.2f} s (medians of {args.runs})  -> ratio {result['submit_ratio']:.3f} "
        "(goal <= 1.0)"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
