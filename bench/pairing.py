"""Pairing benchmark: joining with a code in the lab, and flooding and guessing on loopback.

- `join_with_code_median_s`: in a 2-node lab (root only), n1 hosts; n2 joins it N times with a
  fresh one-use join code (`lanray-tui code --uses 1`), from `join ADDR --code CODE` until
  the joined agent is ready (the command returns), and leaves between two joins. Before each
  join n2 forgets everything it got from the last one (credentials, certificates), so each
  is a first join: pairing, then Ray's start. `--joins 0` skips the lab.
- `flood_heartbeat_p99_ms`: a PairingService runs in this process's event loop next to a
  task that wakes every 10 ms, as a heartbeat loop does; another process floods the pairing
  port with bad attempts (each a fresh SPAKE2 message from the wrong side, so that each
  costs the host its SPAKE2 work and none counts as a guess) from 32 loopback addresses,
  32 at a time. The figure is the 99th percentile of how late the task woke during the flood
  (goal <= 200). Most of those 32 at a time are closed at once by the connection cap, so a
  second flood, `spake_flood_*`, sends 8 at a time, under every cap: each attempt then costs
  the host its SPAKE2 work. `--spake-on-loop` runs the SPAKE2 work on the event loop instead,
  to show what the pairing thread saves.
- `guesses_per_hour`: the most failed attempts the host-wide budget lets through in one hour
  after the owner's new code, for an attacker with any number of addresses
  (`Budget.max_failures_within(3600)`), and what that means for the 6.5 million codes.

    python bench/pairing.py [--joins N] [--lab NAME] [--attempts N] [--spake-on-loop] [--json]

With `--json`, the last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from typing import Any

from _common import (  # also puts the checkout on sys.path
    LANRAY,
    ROOT,
    bench_lab,
    checked,
    die,
    on_node,
    settle,
)

from lanray_tui.core.announcer import PairingService
from lanray_tui.core.joincode import CODE_SPACE, Budget, CodeBook

TICK_S = 0.01


def flood_client(port: int, attempts: int, concurrency: int = 32) -> None:
    """The attacker (a process of its own): the flood the tests use, ``concurrency`` at once."""
    from tests.helpers.pairingkit import flood

    flood(port, attempts, concurrency)


async def _ticks(stop: asyncio.Event) -> list[float]:
    delays = []
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK_S)
        delays.append(time.perf_counter() - start - TICK_S)
    return delays


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * q))]


async def measure_flood(attempts: int, concurrency: int, spake_on_loop: bool) -> dict[str, Any]:
    service = PairingService(CodeBook(), lambda hello, csr: {})
    service.codes.issue()
    await service.start("127.0.0.1", 0)
    spake_work = 0
    threaded = service._spake

    async def counting(fn: Any) -> Any:
        nonlocal spake_work
        spake_work += 1
        return fn() if spake_on_loop else await threaded(fn)

    service._spake = counting  # type: ignore[method-assign]
    idle_stop = asyncio.Event()
    idle = asyncio.create_task(_ticks(idle_stop))
    await asyncio.sleep(1.0)
    idle_stop.set()
    idle_delays = await idle

    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticks(stop))
    started = time.monotonic()
    argv = [sys.executable, __file__, "--flood-client", str(service.port), str(attempts)]
    argv.append(str(concurrency))
    proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT)
    await proc.wait()
    took = time.monotonic() - started
    stop.set()
    delays = await ticker
    service.close()
    return {
        "flood_heartbeat_p99_ms": round(_pct(delays, 0.99) * 1000, 1),
        "flood_heartbeat_p50_ms": round(statistics.median(delays) * 1000, 1),
        "flood_heartbeat_max_ms": round(max(delays) * 1000, 1),
        "idle_heartbeat_p99_ms": round(_pct(idle_delays, 0.99) * 1000, 1),
        "flood_attempts": attempts,
        "flood_seconds": round(took, 2),
        "flood_spake_work": spake_work,
        "flood_dropped_at_cap": service.dropped,
        "flood_counted_as_guesses": service.codes.failures_total,
        "spake_on_loop": spake_on_loop,
    }


def join_with_code(joins: int, lab_name: str) -> dict[str, Any]:
    """N first joins of a lab node with a fresh code each; their median (and each)."""
    times: list[float] = []
    with bench_lab(lab_name, 2) as lab:
        head = lab.node("n1").address
        checked(on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]), "host")
        data = lab.node("n2").root / "home" / ".local" / "share" / "lanray-tui"
        for i in range(joins):
            settle()
            code = checked(on_node(lab, "n1", [*LANRAY, "code", "--uses", "1"]), "code")
            join = [*LANRAY, "join", head, "--code", code.split()[-1], "--headless", "--detach"]
            started = time.perf_counter()
            checked(on_node(lab, "n2", join), "join with a code")
            times.append(time.perf_counter() - started)
            checked(on_node(lab, "n2", [*LANRAY, "leave"]), "leave")
            # the next join is a first one again: no credentials, no certificate
            (data / "cluster.json").unlink(missing_ok=True)
            shutil.rmtree(data / "tls", ignore_errors=True)
            print(f"join {i + 1}/{joins}: {times[-1]:.2f} s", file=sys.stderr)
        checked(on_node(lab, "n1", [*LANRAY, "leave"]), "leave")
    return {
        "join_with_code_median_s": round(statistics.median(times), 2),
        "join_with_code_s": [round(t, 2) for t in times],
    }


def guessing() -> dict[str, Any]:
    budget = Budget()
    per_hour = budget.max_failures_within(3600)
    hours = CODE_SPACE / per_hour  # a fresh random code every hour: p = per_hour / CODE_SPACE
    return {
        "code_space": CODE_SPACE,
        "budget_soft": budget.soft,
        "budget_hard": budget.hard,
        "budget_per_source": budget.per_source,
        "guesses_per_hour": per_hour,
        "expected_years_to_guess": round(hours / (24 * 365), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--joins", type=int, default=5, metavar="N", help="joins in the lab (0: none)")
    ap.add_argument("--lab", default="bpair", metavar="NAME", help="the lab's name")
    ap.add_argument("--attempts", type=int, default=500, metavar="N")
    ap.add_argument("--spake-on-loop", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--flood-client", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flood_client:
        flood_client(*args.flood_client)
        return 0
    if args.joins > 0 and os.geteuid() != 0:
        die("the joins run in the lab, which needs root ('--joins 0' runs the rest)")
    joined = join_with_code(args.joins, args.lab) if args.joins > 0 else {}
    capped = asyncio.run(measure_flood(args.attempts, 32, args.spake_on_loop))
    under = asyncio.run(measure_flood(args.attempts, 8, args.spake_on_loop))
    result = {
        **joined,
        **capped,
        **{f"spake_{k}": v for k, v in under.items() if k.startswith("flood_")},
        **guessing(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
