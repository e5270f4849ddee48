"""Issue 20 in the lab, the other half: the run grows back when the machine is lent again.

A tier of its own (``make elastic``, about 3 minutes; not in ``make test``, which must stay
under 15 minutes on a 2-core machine). One worker per CPU of the cluster: n1 and n2 lend
theirs, n3 one. n3's owner comes back in epoch 2 and types until the run goes on with one
worker fewer, then leaves; n3 is lent again once its owner has been away 6 s (and 2 s
more), and at Ray Train's next resize check (train_digits --resize-every 8) the run grows
back onto it, from the last checkpoint.
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
from tests.helpers.labkit import LANRAY
from tests.helpers.ownerkit import join_as_owned, press_key

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("torch", "sklearn")),
        reason="needs torch and scikit-learn (pip install -e '.[samples]')",
    ),
]
SCRIPT = Path(__file__).resolve().parents[2] / "sample_jobs" / "train_digits.py"
DEADLINE_S = 60  # lending.drain_deadline_s's default


def test_the_run_grows_back_when_the_laptop_is_lent_again(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    """One worker per CPU of the cluster (n1 and n2 lend theirs, n3 one). n3's owner comes
    back in epoch 2 and keeps typing until the run goes on with one worker fewer, then
    leaves: n3 is lent again once its owner has been away 6 s (and 2 s more), and at Ray
    Train's next resize check the run grows back to every CPU, from the last checkpoint,
    and finishes SUCCEEDED."""
    n1, n3 = cluster["n1"], cluster["n3"]
    job = None
    typing = threading.Event()
    try:
        keys = join_as_owned(
            n1, n3, tmp_path / "owner", DEADLINE_S, idle_minutes=0.1, resume_after_s=2
        )
        rows = [r for r in n1.status()["nodes"] if r["state"] == "ALIVE"]
        workers = int(sum(r["cpus"] for r in rows))
        assert len(rows) == 3 and workers >= 3, rows
        argv = ["submit", str(SCRIPT), "--follow", "--", "--skip-baseline"]
        job = n1.popen(
            [*LANRAY, *argv, "--workers", str(workers), "--epochs", "14", "--resize-every", "8"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert job.stdout is not None
        lines: list[str] = []
        for line in job.stdout:
            lines.append(line)
            if f"[{workers} worker(s)] epoch 1:" in line:
                break
        else:
            raise AssertionError("".join(lines[-30:]))

        def owner_types() -> None:  # a key a second while the owner is at the machine
            while typing.is_set():
                press_key(keys)
                time.sleep(1.0)

        typing.set()
        threading.Thread(target=owner_types, daemon=True).start()
        for line in job.stdout:
            lines.append(line)
            if f"[{workers - 1} worker(s)] epoch" in line:
                typing.clear()  # the run went on without n3: its owner leaves
        job.wait(timeout=400)
        out = "".join(lines)
        assert job.returncode == 0 and lines[-1].startswith("SUCCEEDED"), out[-4000:]
        got = json.loads(next(ln for ln in reversed(lines) if ln.startswith("{")))
        par = got["parallel"]
        attempts = par["workers_by_attempt"]
        assert attempts[:2] == [workers, workers - 1], (attempts, out[-3000:])
        assert attempts[-1] == workers, (attempts, out[-3000:])
        assert any(n3.address in name for name in par["nodes"]), par["nodes"]
        assert par["accuracy"] >= 0.85, par  # it trained (0.96 in the lab)
        assert n3.status()["agent"]["lending"]["state"] == "lending"
        print(
            f"\nworkers by attempt {attempts}, resumed after epochs "
            f"{par['resumed_from_epoch']}, accuracy {par['accuracy']:.4f}, wall "
            f"{par['wall_s']:.0f} s"
        )
    finally:
        typing.clear()
        if job is not None and job.poll() is None:
            job.kill()
            job.wait()
        n3.leave()
