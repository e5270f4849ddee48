"""Balancing benchmark: train_digits on 2 lab nodes when one of them is slower.

In a 2-node lab of 1 CPU per node, n2 plays the slower machine (an older laptop, or a lab
PC whose owner has started something): a busy loop takes about half of its CPU while n2
trains. Each run measures train_digits' training loop, through
`lanray-tui submit --follow`:
  a. on n1 alone (1 worker), before n2 joins;
  b. on both, with equal shards (--no-balance): each step waits for n2;
  c. on both, with each worker's share of every batch following its speed (the default).
b and c take turns going first. Speed-up = time on n1 alone / time on both (medians of
--runs runs); balance_gain = time of b / time of c. Accuracy should not move: c trains on
the same global batches as b. The training averages the gradients at every step
(--sync step), where a slower worker costs the most; with train_digits' default
(--sync epoch) only each epoch's end waits for it.

    python bench/balance.py [--runs N] [--epochs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from _common import LANRAY, bench_lab, checked, host_on_n1, median, on_node, result_of, settle

from lanray_tui.core import lab as labmod

# A busy loop that ends with the command that started it (its parent changes then).
BUSY = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    sum(range(10000))\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    times: dict[str, list[float]] = {"alone": [], "equal": [], "balanced": []}
    accuracy: dict[str, list[float]] = {k: [] for k in times}
    shares: list[dict[str, float]] = []
    with bench_lab("bbal", 2, cpus_per_node=1) as lab:

        def train(kind: str, *extra: str) -> None:
            argv = ["--skip-baseline", "--sync", "step", "--epochs", str(args.epochs), *extra]
            p = on_node(
                lab,
                "n1",
                [*LANRAY, "submit", "sample_jobs/train_digits.py", "--follow", "--", *argv],
                timeout=600,
            )
            got = result_of(p.stdout, f"train_digits ({kind})")["parallel"]
            times[kind].append(float(got["train_s"]))
            accuracy[kind].append(float(got["accuracy"]))
            if kind == "balanced":  # each node's share of a batch at the end
                names = [str(n).split()[0] for n in got["nodes"]]
                shares.append(dict(zip(names, got["shares"], strict=True)))
            print(
                f"{kind}: loop {got['train_s']:.2f} s, accuracy {got['accuracy']:.4f}",
                file=sys.stderr,
            )

        join = host_on_n1(lab, cpus=1)
        for run in range(1, args.runs + 1):
            print(f"run {run}", file=sys.stderr)
            settle()
            train("alone", "--workers", "1")
            checked(on_node(lab, "n2", join), "join")
            settle()
            busy = labmod.run(lab, "n2", [sys.executable, "-c", BUSY], stdin=subprocess.DEVNULL)
            try:
                order = [("equal", ("--no-balance",)), ("balanced", ())]
                for kind, extra in order if run % 2 else order[::-1]:
                    train(kind, "--workers", "2", *extra)
            finally:
                busy.kill()
                busy.wait()
            checked(on_node(lab, "n2", [*LANRAY, "leave"]), "leave")
        on_node(lab, "n1", [*LANRAY, "leave"])

    alone, equal, balanced = (median(times[k]) for k in ("alone", "equal", "balanced"))
    acc = {k: median(v) for k, v in accuracy.items()}
    result: dict[str, Any] = {
        "equal_speedup": round(alone / equal, 3),
        "balanced_speedup": round(alone / balanced, 3),
        "balance_gain": round(equal / balanced, 3),
        "train_s": {k: round(median(v), 3) for k, v in times.items()},
        "accuracy": {k: round(v, 4) for k, v in acc.items()},
        "balanced_accuracy_delta": round(acc["balanced"] - acc["equal"], 4),
        "balanced_shares": shares,
        "runs": args.runs,
        "epochs": args.epochs,
    }
    print(
        f"train_digits ({args.epochs} epochs), n2 sharing its CPU: n1 alone {alone:.2f} s; "
        f"both, equal shards {equal:.2f} s ({result['equal_speedup']:.2f}x); both, balanced "
        f"{balanced:.2f} s ({result['balanced_speedup']:.2f}x): balancing "
        f"{result['balance_gain']:.2f}x faster; accuracy {acc['alone']:.4f} alone, "
        f"{acc['equal']:.4f} equal, {acc['balanced']:.4f} balanced"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
