"""Metrics from Ray's own result files: what a job reports with ``ray.train.report(...)`` or
``tune.report(...)``, with no change to its code.

Ray Tune (and Ray Train) write one ``result.json`` per trial (one JSON object per report) in
the run's storage: the cluster storage when the job uses ``lanray_tui.storage.run_config``,
else Ray's default ``~/ray_results`` on the node that runs the driver (the head). The host
reads the trials of a job there: the ones in its output folder, and the experiments under
``~/ray_results`` written while it ran. Every number a report carries becomes a series, but
Ray's own bookkeeping (timestamps, iteration counters, process ids).

Nothing here trusts the files: a line that is not a JSON object, a value that is not a
number, a file past :data:`MAX_FILE_BYTES` are skipped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RESULT_FILE = "result.json"
MAX_FILE_BYTES = 16 << 20
MAX_POINTS = 1000  # per series, the last ones
MAX_TRIALS = 200
MAX_DEPTH = 4  # below a root: experiment / trial / (train: checkpoint or rank dirs)
SLACK_S = 5.0  # a file written this much before the job started still counts as its own

#: Ray's bookkeeping in every report: not metrics a person asked for.
BOOKKEEPING = frozenset(
    {
        "timestamp",
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
        "pid",
        "done",
        "checkpoint_dir_name",
        "date",
        "hostname",
        "node_ip",
        "trial_id",
        "config",
    }
)

_LOWER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "regret", "perplexity")
_HIGHER_IS_BETTER = ("acc", "accuracy", "score", "reward", "auc", "f1", "precision", "recall")


@dataclass
class Trial:
    """One trial's series, by metric name, in report order."""

    name: str
    series: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, list[float]]:
        return self.series


def read_trial(path: Path) -> Trial | None:
    """A ``result.json``'s numeric series (None if it cannot be read or holds none)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        text = path.read_text(errors="replace")
    except OSError:
        return None
    trial = Trial(path.parent.name)
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            if key in BOOKKEEPING or isinstance(value, bool) or not isinstance(key, str):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                points = trial.series.setdefault(key[:80], [])
                points.append(float(value))
                if len(points) > MAX_POINTS:
                    del points[0]
    return trial if trial.series else None


def result_files(root: Path, since: float = 0.0, until: float | None = None) -> list[Path]:
    """The ``result.json`` files under ``root`` (at most :data:`MAX_DEPTH` levels down)
    last written between ``since`` and ``until`` (Unix times), oldest first."""
    found: list[tuple[float, Path]] = []
    if not root.is_dir():
        return []
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if len(here.parts) - base >= MAX_DEPTH:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if RESULT_FILE in filenames:
            path = here / RESULT_FILE
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if mtime >= since - SLACK_S and (until is None or mtime <= until + SLACK_S):
                found.append((mtime, path))
        if len(found) >= MAX_TRIALS:
            break
    return [p for _, p in sorted(found)]


def collect(roots: Iterable[tuple[Path, float, float | None]]) -> list[Trial]:
    """The trials under each ``(root, since, until)``, in the order their files were
    written; two trials of one name (two runs of an experiment) keep both, suffixed."""
    trials: list[Trial] = []
    seen: dict[str, int] = {}
    for root, since, until in roots:
        for path in result_files(root, since, until):
            trial = read_trial(path)
            if trial is None:
                continue
            n = seen.get(trial.name, 0)
            seen[trial.name] = n + 1
            if n:
                trial.name = f"{trial.name} ({n + 1})"
            trials.append(trial)
    return trials[:MAX_TRIALS]


def guess_mode(metric: str) -> str | None:
    """``min`` for a loss or an error, ``max`` for an accuracy or a score, else None."""
    low = metric.lower()
    if any(w in low for w in _LOWER_IS_BETTER):
        return "min"
    if any(w in low for w in _HIGHER_IS_BETTER):
        return "max"
    return None


def best(
    trials: list[Trial], metric: str | None = None, mode: str | None = None
) -> tuple[str, str, str] | None:
    """(trial, metric, mode) of the best trial by the last value of ``metric``: the given
    one, else the first metric every trial reports whose name says which way is better."""
    if not trials:
        return None
    if metric is None:
        common = [m for m in trials[0].series if all(m in t.series for t in trials)]
        metric = next((m for m in common if guess_mode(m)), None)
        if metric is None:
            return None
    mode = mode or guess_mode(metric)
    if mode not in ("min", "max"):
        return None
    scored = [(t.series[metric][-1], t.name) for t in trials if t.series.get(metric)]
    if not scored:
        return None
    _, name = (min if mode == "min" else max)(scored)
    return name, metric, mode
