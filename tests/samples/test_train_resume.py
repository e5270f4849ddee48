"""train_digits after a restart: the optimizer and the schedule pick up where the
checkpoint left them (for the number of workers the run has now), and the run's log never
counts an epoch twice and says how much work was done again."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[samples]')")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sample_jobs"))
from train_digits import RunLog, make_model, make_optimizer, resume_optimizer


def _stepped(world: int, total: int, steps: int) -> tuple[object, object, object]:
    import torch

    torch.manual_seed(0)
    model = make_model()
    opt, schedule = make_optimizer(model, 3e-3, world, total)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.rand(4, 1, 16, 16)).sum().backward()
        opt.step()
        schedule.step()
    return model, opt, schedule


def test_the_same_world_resumes_exactly_where_it_was() -> None:
    _, opt, schedule = _stepped(3, 40, 12)
    saved = opt.state_dict()  # type: ignore[attr-defined]
    model2 = make_model()
    opt2, schedule2 = make_optimizer(model2, 3e-3, 3, 40)
    resume_optimizer(opt2, schedule2, saved, 12)
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])  # type: ignore[attr-defined]
    assert schedule2.last_epoch == schedule.last_epoch == 12  # type: ignore[attr-defined]
    first = next(iter(opt2.state.values()))
    assert int(first["step"]) == 12  # Adam's moments came back


def test_fewer_workers_follow_their_own_schedule_from_the_same_progress() -> None:
    _, opt, _ = _stepped(3, 40, 12)  # 3 workers: 10 steps an epoch, 4 epochs; 1.2 done
    saved = opt.state_dict()  # type: ignore[attr-defined]
    _, _, alone = _stepped(2, 60, 18)  # 2 workers from the start, at the same progress
    model2 = make_model()
    opt2, schedule2 = make_optimizer(model2, 3e-3, 2, 60)
    resume_optimizer(opt2, schedule2, saved, 18)
    assert opt2.param_groups[0]["lr"] == pytest.approx(alone.get_last_lr()[0])  # type: ignore[attr-defined]
    assert opt2.param_groups[0]["max_lr"] == pytest.approx(2 * 3e-3)


def row(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.5 + epoch / 100}


def test_a_resumed_run_counts_each_epoch_once_and_the_work_done_again() -> None:
    log = RunLog()
    log.attempt(3, 0)
    for e in (1, 2, 3):
        log.begin(e)
        log.add(row(e), 2.0)
    log.attempt(2, 1)  # the checkpoint of epoch 1: epochs 2 and 3 are done again
    for e in (2, 3, 4):
        log.begin(e)
        log.add(row(e), 3.0)
    got = log.result()
    assert [r["epoch"] for r in got["history"]] == [1, 2, 3, 4]
    assert got["train_s"] == 2.0 + 3 * 3.0
    assert got["lost_work_s"] == 4.0
    assert got["restarts"] == 1 and got["resumed_from_epoch"] == [1]
    assert got["workers_by_attempt"] == [3, 2]


def test_an_epoch_cut_short_counts_as_at_most_one_epoch() -> None:
    log = RunLog()
    log.attempt(3, 0)
    log.begin(1)
    log.add(row(1), 2.0)
    log.begin(2)
    log._begun = 0.0  # began long ago: capped at a typical epoch's time
    log.attempt(2, 1)
    assert log.result()["lost_work_s"] == 2.0
    log.add(row(2), 2.5)
    log.attempt(2, 2)  # left right after its checkpoint: nothing done again
    assert log.result()["lost_work_s"] == 2.0 and log.result()["restarts"] == 2


def test_the_checkpoint_loads_with_torchs_safe_loader(tmp_path: Path) -> None:
    """load_checkpoint reads what report_epoch saves with torch.load's default (weights
    only: no pickled code runs)."""
    import torch

    model, opt, schedule = _stepped(3, 40, 5)
    state = {
        "epoch": 2,
        "model": model.state_dict(),  # type: ignore[attr-defined]
        "optimizer": opt.state_dict(),  # type: ignore[attr-defined]
        "schedule": schedule.state_dict(),  # type: ignore[attr-defined]
    }
    torch.save(state, tmp_path / "checkpoint.pt")
    back = torch.load(tmp_path / "checkpoint.pt", map_location="cpu")
    assert back["epoch"] == 2 and back["schedule"]["last_epoch"] == 5
