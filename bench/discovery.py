"""Issue 3 benchmark: how fast a joiner finds the host, next to the raw UDP round trip.

In a 2-node lab (host on n1, scans from n2), inside one process on n2 (no Python start-up):
  - 50 scans, each from its start until the host is listed: median and p95;
  - 50 UDP round trips between the same two nodes (an echo on n1): median;
  - ARP sweeps of the /24: the median of 3, and scapy's import before the first apart.

    python bench/discovery.py [--trials N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

from _common import LANRAY, bench_lab, checked, last_json, median, on_node, p95

ECHO_PORT = 47999


def inside(trials: int, head: str) -> None:
    from lanray_tui.adapters import arp
    from lanray_tui.core import config, discovery, netinfo

    cfg = config.load()
    scans = []
    for _ in range(trials):
        t0 = time.perf_counter()
        found = discovery.scan(cfg, timeout=2.0, use_arp=False, until_first=True)
        dt = time.perf_counter() - t0
        if not any(h.address == head for h in found.hosts):
            raise SystemExit("discovery.py: error: a scan did not find the host")
        scans.append(dt * 1000)
    rtts = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        for i in range(trials):
            t0 = time.perf_counter()
            s.sendto(str(i).encode(), (head, ECHO_PORT))
            s.recvfrom(64)
            rtts.append((time.perf_counter() - t0) * 1000)
    iface = netinfo.lan_interfaces()[0]
    net = f"{iface.address.rsplit('.', 1)[0]}.0/24"
    t0 = time.perf_counter()
    arp.load()  # scapy's import, once per process: timed apart from the sweeps
    import_s = time.perf_counter() - t0
    sweeps, live = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        live = arp.sweep(iface.name, net, timeout=0.5)
        sweeps.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "scans_ms": scans,
                "rtts_ms": rtts,
                "arp_sweeps_s": sweeps,
                "arp_import_s": import_s,
                "arp_found": live,
            }
        )
    )


ECHO = (
    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    f"s.bind(('0.0.0.0', {ECHO_PORT}))\nprint('ready', flush=True)\n"
    "while True:\n    d, a = s.recvfrom(64); s.sendto(d, a)\n"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--inside", metavar="HEAD", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args.trials, args.inside)
        return 0
    from lanray_tui.core import lab as labmod

    with bench_lab("bdisc", 2) as lab:
        head = lab.node("n1").address
        checked(on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]), "host")
        env = {k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"}
        echo = labmod.run(
            lab, "n1", [sys.executable, "-c", ECHO], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
            out = last_json(
                checked(
                    on_node(
                        lab,
                        "n2",
                        [
                            sys.executable,
                            os.path.abspath(__file__),
                            "--trials",
                            str(args.trials),
                            "--inside",
                            head,
                        ],
                    ),
                    "measure",
                )
            )
        finally:
            echo.kill()
            echo.wait(10)
            on_node(lab, "n1", [*LANRAY, "leave"])
    result = {
        "median_ms": round(median(out["scans_ms"]), 2),
        "p95_ms": round(p95(out["scans_ms"]), 2),
        "udp_rtt_ms": round(median(out["rtts_ms"]), 3),
        "arp_sweep_s": round(median(out["arp_sweeps_s"]), 3),
        "arp_import_s": round(out["arp_import_s"], 3),
        "arp_first_sweep_s": round(out["arp_import_s"] + out["arp_sweeps_s"][0], 3),
        "trials": args.trials,
        "arp_found_host": head in out["arp_found"],
    }
    print(
        f"scan until the host is listed: median {result['median_ms']} ms, p95 "
        f"{result['p95_ms']} ms over {args.trials} scans (goal: median <= 50 ms)"
    )
    print(f"UDP round trip n2 -> n1: median {result['udp_rtt_ms']} ms")
    print(
        f"ARP sweep of the /24: median {result['arp_sweep_s']} s of 3, host found: "
        f"{result['arp_found_host']} (goal <= 1 s); scapy's import before the first "
        f"{result['arp_import_s']} s (first sweep with it: {result['arp_first_sweep_s']} s)"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
