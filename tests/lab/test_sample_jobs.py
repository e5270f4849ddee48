"""Every sample job runs to SUCCEEDED on the lab cluster (CPU only), submitted with the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_root

pytestmark = needs_root
SAMPLES = Path(__file__).resolve().parents[2] / "sample_jobs"


def needs(module: str) -> Any:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (pip install -e '.[samples]')",
    )


def run_sample(node: Any, script: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    return submit_sample(node, script, *args, timeout=timeout)[0]


def submit_sample(
    node: Any, script: str, *args: str, timeout: float = 240
) -> tuple[dict[str, Any], list[str]]:
    """The job's JSON summary (its last JSON line) and every line of its log."""
    p = node.lanray("submit", str(SAMPLES / script), "--follow", "--", *args, timeout=timeout)
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-2000:])
    assert lines[-1].startswith("SUCCEEDED"), lines[-5:]
    result = next(ln for ln in reversed(lines) if ln.startswith("{"))
    return json.loads(result), lines


def test_parallel_map(cluster: dict[str, Any]) -> None:
    got = run_sample(cluster["n1"], "parallel_map.py")
    assert got["n"] == 1_000_000 and got["checksum_ok"]
    assert got["speedup"] > 0 and sum(got["work_by_node"].values()) == 1_000_000


@needs("sklearn")
def test_kfold_cv(cluster: dict[str, Any], tmp_path: Path) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    got = run_sample(n2, "kfold_cv.py", "--folds", "4")
    assert got["folds"] == 4 and got["mean_accuracy"] > 0.9
    # its report is in the job's folder of the cluster storage, and comes home to n2
    prefix = f"webdavs://{n1.address}:47477/jobs/"
    assert got["report"].startswith(prefix) and got["report"].endswith("/kfold_report.json")
    job = got["report"][len(prefix) :].split("/")[0]
    p = n2.lanray("results", job, "--to", str(tmp_path), timeout=60)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / job / "kfold_report.json").read_text())
    assert report["mean_accuracy"] == got["mean_accuracy"] and len(report["folds_detail"]) == 4
    assert (tmp_path / job / "kfold_folds.csv").read_text().count("\n") == 5


def test_gpu_tasks_without_gpus(cluster: dict[str, Any]) -> None:
    got = run_sample(cluster["n1"], "gpu_tasks.py", "--tasks", "3", "--seconds", "0.5")
    assert got["mode"] == "cpu" and got["gpus"] == 0 and got["tasks"] == 3


@needs("torch")
@needs("sklearn")
def test_train_digits(cluster: dict[str, Any]) -> None:
    from lanray_tui.core import metrics

    got, lines = submit_sample(cluster["n1"], "train_digits.py", "--epochs", "2", timeout=300)
    assert got["epochs"] == 2 and got["device"] == "cpu"
    # what the TUI's job details plot: loss and accuracy per epoch, for both runs
    series = metrics.parse(lines)
    assert len(series["1w loss"]) >= 2 and len(series[f"{got['workers']}w accuracy"]) >= 2
    assert got["parallel"]["workers"] == got["workers"] >= 1
    assert got["baseline"]["accuracy"] > 0.5 and got["parallel"]["accuracy"] > 0.5
    assert "speedup" in got and "accuracy_delta" in got
    # a checkpoint every epoch, in the job's folder of the cluster storage
    assert got["parallel"]["checkpoint"].startswith("jobs/j-")
    assert "/checkpoint_" in got["parallel"]["checkpoint"]
