"""Metrics from Ray's own result files, read the way the host reads them: a Tune experiment
laid out as Ray 2.60 writes it (one result.json per trial, one JSON object per report)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lanray_tui.core import ray_results

RAY_ROW = {  # a real Tune report's shape (tune_basic_example.py), bookkeeping included
    "iterations": 0,
    "mean_loss": 19.96,
    "timestamp": 1796315164,
    "checkpoint_dir_name": None,
    "done": False,
    "training_iteration": 1,
    "trial_id": "3661b_00000",
    "date": "2026-12-03_16-26-04",
    "time_this_iter_s": 0.10,
    "time_total_s": 0.10,
    "pid": 466,
    "hostname": "n1",
    "node_ip": "127.0.0.1",
    "config": {"steps": 5, "width": 10.7},
    "time_since_restore": 0.10,
    "iterations_since_restore": 1,
}


def experiment(root: Path, losses: dict[str, list[float]], mtime: float | None = None) -> None:
    exp = root / "easy_objective_2026-12-03_16-25-54"
    for trial, values in losses.items():
        d = exp / trial
        d.mkdir(parents=True)
        rows = [{**RAY_ROW, "iterations": i, "mean_loss": v} for i, v in enumerate(values)]
        (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (d / "params.json").write_text("{}")
        if mtime is not None:
            os.utime(d / "result.json", (mtime, mtime))


def test_one_series_per_metric_per_trial_without_rays_bookkeeping(tmp_path: Path) -> None:
    experiment(tmp_path, {"t_00000": [19.9, 14.7, 13.1], "t_00001": [12.2, 8.1, 6.4]})
    trials = ray_results.collect([(tmp_path, 0.0, None)])
    assert {t.name for t in trials} == {"t_00000", "t_00001"}
    one = next(t for t in trials if t.name == "t_00001")
    assert one.series == {"iterations": [0.0, 1.0, 2.0], "mean_loss": [12.2, 8.1, 6.4]}
    assert ray_results.best(trials) == ("t_00001", "mean_loss", "min")
    assert ray_results.best(trials, "iterations", "max")[1:] == ("iterations", "max")  # type: ignore[index]
    assert ray_results.best(trials, "iterations") is None  # says nothing of which way


def test_only_the_jobs_own_window_counts(tmp_path: Path) -> None:
    now = time.time()
    experiment(tmp_path / "old", {"before": [1.0]}, mtime=now - 3600)
    experiment(tmp_path / "new", {"during": [2.0]}, mtime=now - 60)
    experiment(tmp_path / "later", {"after": [3.0]}, mtime=now)
    trials = ray_results.collect([(tmp_path, now - 120, now - 30)])
    assert [t.name for t in trials] == ["during"]


def test_broken_files_are_skipped_not_fatal(tmp_path: Path) -> None:
    d = tmp_path / "exp" / "trial"
    d.mkdir(parents=True)
    (d / "result.json").write_text(
        'not json\n[1, 2]\n{"loss": "high"}\n{"loss": NaN}\n{"loss": 0.5, "ok": true}\n'
        '{"loss": 1e400}\n{"accuracy": 0.9}\n'
    )
    (tmp_path / "exp" / "empty").mkdir()
    (tmp_path / "exp" / "empty" / "result.json").write_text("{}\n")
    trials = ray_results.collect([(tmp_path, 0.0, None), (tmp_path / "missing", 0.0, None)])
    assert [(t.name, t.series) for t in trials] == [("trial", {"loss": [0.5], "accuracy": [0.9]})]
    assert ray_results.best([]) is None


def test_modes_by_name() -> None:
    assert ray_results.guess_mode("val_loss") == "min"
    assert ray_results.guess_mode("test_accuracy") == "max"
    assert ray_results.guess_mode("episode_reward_mean") == "max"
    assert ray_results.guess_mode("lr") is None
