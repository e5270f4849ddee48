"""Owner-returns benchmark: n3's owner comes back in the middle of a data-parallel training.

In a 3-node lab where each node is a machine of 1 CPU (the lab gives each node a CPU of its
own, and its Ray lends that 1 CPU), n1 hosts, n2 joins, and n3 joins with the lending policy
on (its owner's input counts; see tests/helpers/ownerkit.py for the lab's keyboard).
sample_jobs/train_digits.py trains with 3 workers, one a node, submitted on n1. Each pair of
runs is one undisturbed run, then one where n3's owner presses a key as epoch 2 begins; the
pairs are interleaved so that drift in this machine's speed hits both alike. After a
disturbed run n3 leaves and joins again, lending from the start.

JSON keys (medians over the pairs):
  stop_new_work_s  the key -> the GCS has accepted n3's drain, after which Ray places no new
                   task there (from n3's agent log; the goal is <= 1). Each run also checks
                   in the head's task list that nothing was placed on n3 more than 1 s
                   after the key: late_placements counts what was (0 expected).
  node_free_s      the key -> no Ray worker process left on n3 (its PID namespace), with the
                   just-in-time checkpoint (the goal is <= 10)
  lost_work_s      training time done again after the resume (train_digits' own count: the
                   epochs after the checkpoint it resumed from, and the epoch it left in)
  slowdown         the disturbed run's wall time (Ray Train's fit, restarts included) over
                   the undisturbed run's
  accuracy_delta   the disturbed run's final test accuracy minus the undisturbed one's (same
                   seed; the goal is within 0.01)
  storage_write_mb_s, storage_read_mb_s  the cluster storage between n2 and n1, next to
                   tcp_write_mb_s, tcp_read_mb_s, a plain TCP copy of the same file
                   (bench/storage.py's measure; the goal is >= 0.7 of it: write_ratio,
                   read_ratio). The lab's cables have no speed, so both copies are bound by
                   this machine's CPUs, which n1 and n2 share: storage_on_1000mbit gives the
                   same figures with n1's and n2's cables at a gigabit, as on a wired LAN

    python bench/owner_returns.py [--runs 3] [--epochs 12] [--quick] [--preemption-watcher]
        [--json]

--quick: one pair and a smaller storage copy (under 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    LANRAY,
    ROOT,
    bench_lab,
    checked,
    die,
    host_on_n1,
    median,
    on_node,
    report,
    result_of,
    settle,
)
from storage import measure as storage_measure
from storage import shape as storage_shape

from lanray_tui.core import lab as labmod
from tests.helpers.ownerkit import (
    log_time,
    owner_files,
    placed_on,
    press_key,
    started_after,
    wait_free,
)

DEADLINE_S = 60  # lending.drain_deadline_s's default
LAN_MBIT = 1000  # storage_on_1000mbit's cables
KEEP_LOG = ""  # --keep-log: where the last disturbed run's job log goes


def alive(lab: labmod.Lab, node: str) -> bool:
    p = on_node(lab, "n1", [*LANRAY, "status", "--json"], timeout=60)
    if p.returncode != 0:
        return False
    ip = lab.node(node).address
    return any(n["ip"] == ip and n["state"] == "ALIVE" for n in json.loads(p.stdout)["nodes"])


def wait_alive(lab: labmod.Lab, node: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if alive(lab, node):
            return
        time.sleep(1)
    die(f"{node} did not join within {timeout:g} s")


def train(lab: labmod.Lab, epochs: int, keys: Path | None, *extra: str) -> dict[str, Any]:
    """One run of train_digits on the three nodes; with ``keys``, n3's owner presses a key
    as epoch 2 begins, and the figures of the owner's return come back too."""
    argv = [*LANRAY, "submit", "sample_jobs/train_digits.py", "--follow", "--",
            "--skip-baseline", "--workers", "3", "--epochs", str(epochs), *extra]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"}
    cmd = labmod.exec_argv(lab, "n1", argv, cwd=str(ROOT), env=base)
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           stdin=subprocess.DEVNULL)  # fmt: skip
    assert job.stdout is not None
    lines: list[str] = []
    pressed = 0.0
    freed: list[float | None] = []
    watch = None
    try:
        for line in job.stdout:
            lines.append(line)
            if keys is not None and not pressed and "[3 worker(s)] epoch 1:" in line:
                pressed = press_key(keys)
                watch = threading.Thread(
                    target=lambda: freed.append(wait_free(lab, "n3", DEADLINE_S + 30))
                )
                watch.start()
        job.wait(timeout=900)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        if watch is not None:
            watch.join()
    if KEEP_LOG and keys is not None:
        Path(KEEP_LOG).write_text("".join(lines))
    par = result_of("".join(lines), "train_digits")["parallel"]
    got: dict[str, Any] = {
        "wall_s": par["wall_s"],
        "accuracy": par["accuracy"],
        "restarts": par["restarts"],
        "lost_work_s": par["lost_work_s"],
        "resumed_from_epoch": par["resumed_from_epoch"],
        "workers_by_attempt": par["workers_by_attempt"],
    }
    if keys is None:
        return got
    if not pressed:
        die("the run ended before its second epoch")
    log = lab.node("n3").root / "home/.local/state/lanray-tui/agent.log"
    drained = log_time(log, "draining this node in Ray", pressed)
    if drained is None:
        die("n3's agent did not drain it")
    time.sleep(2)  # the state API records task events in batches
    tasks = placed_on(lab.node("n3").address, lambda a: on_node(lab, "n1", a))
    got.update(
        stop_new_work_s=drained - pressed,
        node_free_s=(freed[0] - pressed) if freed and freed[0] is not None else None,
        late_placements=len(started_after(tasks, pressed + 1.0)),
    )
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, help="pairs of runs (default 3; 1 with --quick)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--storage-mb", type=int, help="storage copy in MB (100; 50 with --quick)")
    ap.add_argument("--quick", action="store_true", help="one pair, a smaller storage copy")
    ap.add_argument(
        "--preemption-watcher",
        action="store_true",
        help="train_digits learns of the drain from Ray Train's watcher actor instead",
    )
    ap.add_argument("--keep-log", default="", help="write the last disturbed run's log here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global KEEP_LOG
    KEEP_LOG = args.keep_log
    extra = ["--preemption-watcher"] if args.preemption_watcher else []
    runs = args.runs or (1 if args.quick else 3)
    mb = args.storage_mb or (50 if args.quick else 100)
    calm: list[dict[str, Any]] = []
    back: list[dict[str, Any]] = []
    with bench_lab("owr", 3, cpus_per_node=1) as lab:
        join = host_on_n1(lab, cpus=1)
        checked(on_node(lab, "n2", join), "join n2")
        folder = Path(lab.node("n1").root).parent / "owner"
        config, keys, env = owner_files(folder, DEADLINE_S)
        join_n3 = [*LANRAY, "--config", str(config), *join[len(LANRAY) :]]

        def lend_n3() -> None:
            checked(on_node(lab, "n3", join_n3, env=env), "join n3")
            wait_alive(lab, "n3")

        lend_n3()
        for run in range(1, runs + 1):
            settle()
            calm.append(train(lab, args.epochs, None, *extra))
            print(f"run {run}, undisturbed: {calm[-1]}", file=sys.stderr)
            settle()
            back.append(train(lab, args.epochs, keys, *extra))
            print(f"run {run}, owner back: {back[-1]}", file=sys.stderr)
            checked(on_node(lab, "n3", [*LANRAY, "leave"], timeout=120), "n3 leaves")
            if run < runs:
                lend_n3()
        settle()
        store = storage_measure(lab, mb, 1 if args.quick else 3)
        for node in ("n1", "n2"):  # the same copies with the cables of a gigabit LAN
            storage_shape(lab, node, LAN_MBIT)
        settle()
        on_lan = storage_measure(lab, mb, 1 if args.quick else 3)
        for node in ("n2", "n1"):
            on_node(lab, node, [*LANRAY, "leave"], timeout=120)

    def med(key: str, rows: list[dict[str, Any]]) -> float:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(median(values), 3) if values else float("nan")

    result: dict[str, Any] = {
        "stop_new_work_s": med("stop_new_work_s", back),
        "node_free_s": med("node_free_s", back),
        "lost_work_s": med("lost_work_s", back),
        "slowdown": round(
            median([b["wall_s"] / c["wall_s"] for b, c in zip(back, calm, strict=True)]), 3
        ),
        "accuracy_delta": round(
            median([b["accuracy"] - c["accuracy"] for b, c in zip(back, calm, strict=True)]), 4
        ),
        **{k: v for k, v in store.items() if k not in ("file_mb", "runs")},
        "storage_file_mb": mb,
        "storage_on_1000mbit": {k: v for k, v in on_lan.items() if k not in ("file_mb", "runs")},
        "late_placements": sum(b["late_placements"] for b in back),
        "restarts": [b["restarts"] for b in back],
        "resumed_from_epoch": [b["resumed_from_epoch"] for b in back],
        "workers_by_attempt": [b["workers_by_attempt"] for b in back],
        "wall_s": {"undisturbed": med("wall_s", calm), "owner_back": med("wall_s", back)},
        "accuracy": {"undisturbed": med("accuracy", calm), "owner_back": med("accuracy", back)},
        "runs": runs,
        "epochs": args.epochs,
        "drain_deadline_s": DEADLINE_S,
        "preemption_signal": "ray_train_watcher" if args.preemption_watcher else "own",
    }
    report(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
