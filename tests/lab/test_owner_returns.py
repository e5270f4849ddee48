"""Issue 20 in the lab: n3's owner comes back in the middle of a data-parallel training.

``train_digits`` trains on n1, n2 and n3 (one worker each, n3 lending 1 CPU). During its
second epoch n3's owner presses a key (the lab's keyboard: see tests/helpers/ownerkit.py).
Then, within 1 s, Ray places no new task or actor on n3 (its agent has drained it); within
the drain deadline no Ray worker runs there; and the run finishes SUCCEEDED on n1 and n2,
resumed from the checkpoint n3's worker made on leaving. The accuracy is compared with an
undisturbed run of the same seed in bench/owner_returns.py (a second run here would double
this test's time); here it must train (>= 0.85 after these 6 epochs; the lab gave 0.90 and
0.92).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_root
from tests.helpers.labkit import LANRAY, agent_log
from tests.helpers.ownerkit import (
    join_as_owned,
    log_time,
    placed_on,
    press_key,
    started_after,
    wait_free,
)

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("torch", "sklearn")),
        reason="needs torch and scikit-learn (pip install -e '.[samples]')",
    ),
]
SCRIPT = Path(__file__).resolve().parents[2] / "sample_jobs" / "train_digits.py"
EPOCHS = 6
DEADLINE_S = 60  # lending.drain_deadline_s's default


def test_owner_returns_mid_training(cluster: dict[str, Any], tmp_path: Path) -> None:
    from lanray_tui.core import metrics

    n1, n2, n3 = cluster["n1"], cluster["n2"], cluster["n3"]
    lab = n1.lab
    job = None
    try:
        keys = join_as_owned(n1, n3, tmp_path / "owner", DEADLINE_S)
        assert n3.status()["agent"]["lending"]["state"] == "lending"
        argv = ["submit", str(SCRIPT), "--follow", "--", "--skip-baseline", "--workers", "3"]
        job = n1.popen(
            [*LANRAY, *argv, "--epochs", str(EPOCHS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert job.stdout is not None
        lines: list[str] = []
        for line in job.stdout:
            lines.append(line)
            if "[3 worker(s)] epoch 1:" in line:
                break
        else:
            raise AssertionError("".join(lines[-30:]))
        pressed = press_key(keys)  # epoch 2 has begun
        freed: list[float | None] = []
        watch = threading.Thread(target=lambda: freed.append(wait_free(lab, "n3", DEADLINE_S)))
        watch.start()
        lines += job.stdout.readlines()
        job.wait(timeout=300)
        watch.join()
        out = "".join(lines)
        assert job.returncode == 0 and lines[-1].startswith("SUCCEEDED"), out[-4000:]

        # within 1 s of the key, n3 is drained in Ray: no new task or actor goes there
        drained = log_time(agent_log(n3), "draining this node in Ray", pressed)
        assert drained is not None, agent_log(n3).read_text()[-3000:]
        assert drained - pressed <= 1.0, drained - pressed
        time.sleep(2)  # the state API records task events in batches
        late = started_after(placed_on(n3.address, n1.run), pressed + 1.0)
        assert late == [], late
        # within the deadline no Ray worker runs on n3 (with the just-in-time checkpoint,
        # within seconds: the figure is bench/owner_returns.py's node_free_s)
        assert freed and freed[0] is not None and freed[0] - pressed <= DEADLINE_S
        status = n3.status()["agent"]
        assert status["lending"]["state"] == "owner-active", status

        # the run went on without n3, from the checkpoint of the epoch it left in
        got = json.loads(next(ln for ln in reversed(lines) if ln.startswith("{")))
        par = got["parallel"]
        assert par["restarts"] >= 1 and par["resumed_from_epoch"][0] >= 1, par
        assert par["workers_by_attempt"][0] == 3
        final = {name.rsplit("(", 1)[-1].rstrip(")") for name in par["nodes"]}
        assert final <= {n1.address, n2.address}, par["nodes"]
        # the job details plot one series across the restart, every epoch in it
        assert len(metrics.parse(lines)["3w accuracy"]) >= EPOCHS
        assert par["accuracy"] >= 0.85, par  # 6 epochs: 0.90 to 0.92 in the lab
        print(
            f"\nowner back: drained after {drained - pressed:.2f} s, n3 free after "
            f"{freed[0] - pressed:.1f} s; resumed after epoch {par['resumed_from_epoch']}, "
            f"accuracy {par['accuracy']:.4f}, work done again {par['lost_work_s']:.1f} s"
        )
    finally:
        if job is not None and job.poll() is None:
            job.kill()
            job.wait()
        n3.leave()
