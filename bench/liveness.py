"""Issue 7 benchmark: how fast a cut link is noticed, and how fast the node is back.

In a 2-node lab (n1 hosts, n2 joined), per run: pull n2's cable and time until n1 shows n2
UNREACHABLE, keep it pulled until Ray itself declares n2 DEAD (Ray's own figure, same run),
then plug it back and time until n2 is ALIVE again with no command typed. Median of 5.

    python bench/liveness.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import LANRAY, bench_lab, checked, die, median, on_node, token_file

POLL = r"""
import json, sys, time
from lanray_tui.core.control import ControlClient
from lanray_tui.core.paths import Paths
from lanray_tui.core.protocol import StatusRequest
ip = sys.argv[1]
client = ControlClient(Paths.from_env().socket)
last = None
while True:
    try:
        rows = [n for n in client.request(StatusRequest(), timeout=5).nodes if n["ip"] == ip]
    except Exception as exc:
        rows = []
    rows.sort(key=lambda n: n["state"] != "ALIVE")
    cur = (rows[0]["state"], rows[0]["link"]) if rows else ("none", "n/a")
    if cur != last:
        print(json.dumps({"t": time.time(), "state": cur[0], "link": cur[1]}), flush=True)
        last = cur
    time.sleep(0.1)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from lanray_tui.core import lab as labmod

    unreachable, dead, rejoin = [], [], []
    with bench_lab("bliv", 2) as lab:
        n2ip = lab.node("n2").address
        checked(on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]), "host")
        token = checked(on_node(lab, "n1", [*LANRAY, "token"]), "token").strip()
        checked(
            on_node(
                lab,
                "n2",
                [
                    *LANRAY,
                    "join",
                    lab.node("n1").address,
                    "--token-file",
                    token_file(lab, token),
                    "--headless",
                    "--detach",
                ],
            ),
            "join",
        )
        env = {k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"}
        poller = labmod.run(
            lab,
            "n1",
            [sys.executable, "-c", POLL, n2ip],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert poller.stdout is not None

        def until(pred: object, timeout: float) -> float:
            end = time.time() + timeout
            while time.time() < end:
                ev = json.loads(poller.stdout.readline())  # type: ignore[union-attr]
                if pred(ev):  # type: ignore[operator]
                    return float(ev["t"])
            die(f"timed out after {timeout} s")
            return 0.0

        try:
            until(lambda e: e["state"] == "ALIVE" and e["link"] == "UP", 60)
            for i in range(args.runs):
                cut = time.time()
                labmod.link(lab, "n2", up=False)
                unreachable.append(until(lambda e: e["link"] == "UNREACHABLE", 30) - cut)
                dead.append(until(lambda e: e["state"] == "DEAD", 180) - cut)
                plug = time.time()
                labmod.link(lab, "n2", up=True)
                rejoin.append(
                    until(lambda e: e["state"] == "ALIVE" and e["link"] == "UP", 120) - plug
                )
                print(
                    f"run {i + 1}/{args.runs}: unreachable {unreachable[-1]:.1f} s, Ray DEAD "
                    f"{dead[-1]:.1f} s, back ALIVE {rejoin[-1]:.1f} s",
                    file=sys.stderr,
                )
        finally:
            poller.kill()
            labmod.link(lab, "n2", up=True)
            for node in ("n2", "n1"):
                on_node(lab, node, [*LANRAY, "leave"])
    result = {
        "unreachable_s": round(median(unreachable), 2),
        "rejoin_s": round(median(rejoin), 2),
        "ray_dead_s": round(median(dead), 2),
        "runs": args.runs,
    }
    print(
        f"link cut -> UNREACHABLE: median {result['unreachable_s']} s (goal <= 5 s); "
        f"Ray's own DEAD: {result['ray_dead_s']} s"
    )
    print(f"link back -> ALIVE again, by itself: median {result['rejoin_s']} s (goal <= 20 s)")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
