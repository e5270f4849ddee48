"""k-fold cross-validation on scikit-learn's digits, one Ray task per fold.

The data set goes into Ray's object store once (``ray.put``); every fold's task gets a
reference to it, not a copy from the driver. scikit-learn ships the digits, so nothing is
downloaded. Run as a job of a lanray-tui cluster, it writes its report (JSON, and a CSV of the
folds) to the job's folder in the cluster storage, where ``lanray-tui results JOB`` fetches
it from any node. The last line printed is JSON.

    python kfold_cv.py [--folds 5] [--model svc|logreg|forest]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import socket
import statistics
import time
from typing import Any

import numpy as np
import ray


def make_model(kind: str) -> Any:
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if kind == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=1)
    from sklearn.svm import SVC

    return SVC(C=10.0, gamma=0.001)


def fit_fold(
    data: tuple[np.ndarray, np.ndarray], train: np.ndarray, test: np.ndarray, kind: str
) -> float:
    x, y = data
    model = make_model(kind)
    model.fit(x[train], y[train])
    return float(model.score(x[test], y[test]))


@ray.remote(num_cpus=1)
def fold_task(
    data: tuple[np.ndarray, np.ndarray], fold: int, train: np.ndarray, test: np.ndarray, kind: str
) -> dict[str, Any]:
    t0 = time.perf_counter()
    acc = fit_fold(data, train, test, kind)
    return {
        "fold": fold,
        "accuracy": acc,
        "seconds": time.perf_counter() - t0,
        "node": f"{socket.gethostname()} ({ray.util.get_node_ip_address()})",
    }


def save_report(summary: dict[str, Any], folds: list[dict[str, Any]]) -> str | None:
    """The report in this job's folder of the cluster storage; its address (None outside
    a lanray-tui cluster)."""
    try:
        from lanray_tui import storage
    except ImportError:
        return None
    if not storage.available():
        return None
    fs = storage.filesystem()
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["fold", "accuracy", "seconds", "node"])
    writer.writeheader()
    writer.writerows(folds)
    fs.pipe_file(storage.output_path("kfold_folds.csv"), table.getvalue().encode())
    report = {**summary, "folds_detail": folds}
    fs.pipe_file(storage.output_path("kfold_report.json"), json.dumps(report, indent=2).encode())
    return os.environ["LANRAY_OUTPUT_DIR"] + "kfold_report.json"


def main() -> int:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--model", choices=["svc", "logreg", "forest"], default="svc")
    args = ap.parse_args()

    ray.init(logging_level="WARNING")
    x, y = load_digits(return_X_y=True)
    print(f"digits: {len(x)} images of 8x8, {len(set(y.tolist()))} classes", flush=True)
    data_ref = ray.put((x, y))  # once: every fold reads the same copy
    splits = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(x, y))

    t0 = time.perf_counter()
    refs = [
        fold_task.options(scheduling_strategy="SPREAD").remote(data_ref, i, tr, te, args.model)
        for i, (tr, te) in enumerate(splits)
    ]
    folds = sorted(ray.get(refs), key=lambda r: r["fold"])
    wall = time.perf_counter() - t0
    for r in folds:
        print(
            f"fold {r['fold']}: accuracy {r['accuracy']:.4f} "
            f"in {r['seconds']:.2f} s on {r['node']}",
            flush=True,
        )
    accs = [r["accuracy"] for r in folds]
    mean = statistics.mean(accs)
    std = statistics.pstdev(accs)
    print(
        f"{args.model}: {args.folds}-fold accuracy {mean:.4f} ± {std:.4f} in {wall:.2f} s",
        flush=True,
    )
    summary = {
        "model": args.model,
        "folds": args.folds,
        "mean_accuracy": mean,
        "std_accuracy": std,
        "seconds": wall,
        "nodes": sorted({r["node"] for r in folds}),
    }
    summary["report"] = save_report(summary, folds)
    if summary["report"]:
        print(f"report: {summary['report']}", flush=True)
    print(json.dumps(summary), flush=True)
    return 0 if mean > 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
