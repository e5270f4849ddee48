"""The job queue on a real 2-node cluster in the lab, driven through the real CLI.

The session's cluster hosts with the default ``jobs.max_running_jobs: 1``: one job runs at a
time, the others wait in the host's queue.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import needs_root
from tests.helpers.labkit import Node, node_states, wait_for

pytestmark = needs_root

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "LOST")


def submit(node: Node, *argv: str) -> str:
    """Queue a job; returns its id (the last word of what submit prints)."""
    p = node.lanray("submit", *argv, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()[-1]


def all_jobs(node: Node) -> dict[str, dict[str, Any]]:
    p = node.lanray("jobs", "--json", timeout=30)
    assert p.returncode == 0, p.stderr
    return {j["id"]: j for j in json.loads(p.stdout)["jobs"]}


def wait_state(node: Node, job_id: str, states: tuple[str, ...], timeout: float = 90) -> dict:
    def check() -> dict[str, Any] | None:
        job = all_jobs(node)[job_id]
        return job if job["state"] in states else None

    return wait_for(check, timeout, interval=0.3)  # type: ignore[no-any-return]


def py(code: str) -> list[str]:
    return ["--", "python", "-c", code]


def test_jobs_run_one_at_a_time_in_order_and_by_priority(cluster: dict[str, Any]) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    blocker = submit(n1, "--name", "blocker", *py("import time; time.sleep(8); print('b done')"))
    first = submit(n1, "--name", "first", *py("print('first ran')"))
    second = submit(n2, "--name", "second", *py("print('second ran')"))  # a worker submits too
    urgent = submit(n1, "--priority", "5", "--name", "urgent", *py("print('urgent ran')"))
    ids = [blocker, first, second, urgent]
    seen_together = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = all_jobs(n1)
        busy = [j for j in ids if jobs[j]["state"] in ("SUBMITTED", "RUNNING")]
        seen_together = max(seen_together, len(busy))
        if all(jobs[j]["state"] in FINAL for j in ids):
            break
        time.sleep(0.2)
    assert [jobs[j]["state"] for j in ids] == ["SUCCEEDED"] * 4, jobs
    assert seen_together <= 1
    order = sorted(ids, key=lambda j: jobs[j]["submitted"])
    assert order == [blocker, urgent, first, second]
    for before, after in itertools.pairwise(order):
        # one slot: the next job goes to Ray only after the one before it ended
        assert jobs[after]["submitted"] >= jobs[before]["ended"] - 0.5
    assert jobs[second]["submitter"].endswith("@n2") and jobs[urgent]["priority"] == 5
    assert all(jobs[j]["exit_code"] == 0 for j in ids)
    # the log, from the host and from a worker
    assert "urgent ran" in n1.lanray("logs", urgent).stdout
    assert "first ran" in n2.lanray("logs", first).stdout
    table = n1.lanray("jobs").stdout
    assert "urgent" in table and "SUCCEEDED" in table


def test_cancel_a_queued_and_a_running_job_then_retry(cluster: dict[str, Any]) -> None:
    n1 = cluster["n1"]
    running = submit(
        n1, "--name", "sleeper", *py("import time; print('up', flush=True); time.sleep(120)")
    )
    queued = submit(n1, "--name", "waiter", *py("print('waiter ran')"))
    wait_state(n1, running, ("RUNNING",))
    assert all_jobs(n1)[queued]["state"] == "QUEUED"

    p = n1.lanray("cancel", queued)
    assert p.returncode == 0 and f"cancelled {queued}" in p.stdout, p.stderr
    job = all_jobs(n1)[queued]
    assert job["state"] == "CANCELLED" and job["ray_id"] == ""  # never reached Ray

    t0 = time.monotonic()
    p = n1.lanray("cancel", running, timeout=60)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 20
    job = all_jobs(n1)[running]
    assert job["state"] == "CANCELLED", job
    # cancelling what has ended is fine
    p = n1.lanray("cancel", running)
    assert p.returncode == 0 and "already ended" in p.stdout

    p = n1.lanray("retry", queued)
    assert p.returncode == 0 and "attempt 2" in p.stdout, p.stderr
    job = wait_state(n1, queued, FINAL)
    assert job["state"] == "SUCCEEDED" and job["attempt"] == 2
    p = n1.lanray("retry", queued)
    assert p.returncode == 1 and "only failed, lost or cancelled" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_bad_jobs_fail_with_the_reason(cluster: dict[str, Any], tmp_path: Path) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    missing = submit(n1, "--", "python", "no_such_file.py")
    job = wait_state(n1, missing, FINAL)
    assert job["state"] == "FAILED" and job["exit_code"] == 2
    assert "no_such_file.py" in job["message"] and "No such file" in job["message"]
    assert "\n" not in job["message"]

    work = tmp_path / "proj"
    work.mkdir()
    (work / "helper.py").write_text("GREETING = 'hello from helper'\n")
    (work / "bad.py").write_text(
        "import sys\nfrom helper import GREETING\nprint(GREETING, sys.argv[1:], flush=True)\n"
        "raise SystemExit('boom: the input was bad')\n"
    )
    p = n2.lanray("submit", str(work / "bad.py"), "--follow", "--", "a b", "c", timeout=120)
    assert p.returncode == 1, p.stderr
    out = p.stdout.strip().splitlines()
    job_id = out[-1].split()[-1]
    assert out[0].endswith(job_id)
    assert "hello from helper ['a b', 'c']" in p.stdout  # the working dir went with it
    assert out[-1].startswith("FAILED") and "boom: the input was bad" in out[-1]
    job = all_jobs(n1)[job_id]
    assert job["state"] == "FAILED" and job["exit_code"] == 1
    assert "boom: the input was bad" in job["message"]

    p = n1.lanray("submit", str(work / "nope.py"))
    assert p.returncode == 1 and "no such script" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    for argv in (["logs", "j-zzzz"], ["cancel", "j-zzzz"], ["retry", "j-zzzz"]):
        p = n1.lanray(*argv)
        assert p.returncode == 1 and "no job 'j-zzzz'" in p.stderr, argv
        assert len(p.stderr.strip().splitlines()) == 1


def _agent_pid(node: Node) -> int:
    return int(node.status()["agent"]["pid"])


def test_sigkill_of_the_host_agent_keeps_every_job(cluster: dict[str, Any], tmp_path: Path) -> None:
    """A new host agent adopts the head that the killed one left running: finished jobs keep
    their state, the running one goes on to SUCCEEDED with its log, the queued ones run (a
    queued script's upload is kept), and the worker never leaves. No 'ray stop' by hand."""
    n1, n2 = cluster["n1"], cluster["n2"]
    done = submit(n1, "--name", "done-before", *py("print('ok')"))
    wait_state(n1, done, FINAL)
    running = submit(n1, "--name", "long", *py("import time; time.sleep(25); print('survived')"))
    work = tmp_path / "proj"
    work.mkdir()
    (work / "after.py").write_text("print('ran after the restart')\n")
    queued_script = submit(n1, str(work / "after.py"), "--name", "after")
    queued_cmd = submit(n1, "--name", "after-cmd", *py("print('cmd after restart')"))
    wait_state(n1, running, ("RUNNING",))
    packages = Path(n1.lab.node("n1").root) / "home/.local/share/lanray-tui/job-packages"
    kept = packages / all_jobs(n1)[queued_script]["working_dir"].partition("://")[2]
    wait_for(kept.is_file, 30)  # the host keeps a copy of the upload
    before = all_jobs(n1)
    head_pid = json.loads((_state_dir(n1) / "ray.json").read_text())["pid"]

    assert n1.run(["kill", "-9", str(_agent_pid(n1))]).returncode == 0
    wait_for(lambda: not n1.agent_running(), 30)
    p = n1.lanray("host", "--headless", "--detach", timeout=180)
    assert p.returncode == 0, p.stderr
    assert json.loads((_state_dir(n1) / "ray.json").read_text())["pid"] == head_pid
    assert "adopting the running Ray" in (_state_dir(n1) / "agent.log").read_text()

    after = all_jobs(n1)
    assert set(before) <= set(after)
    for job_id, job in before.items():
        if job["state"] in FINAL:
            assert after[job_id]["state"] == job["state"], job_id
    for job_id in (running, queued_script, queued_cmd):
        job = wait_state(n1, job_id, FINAL, timeout=120)
        assert job["state"] == "SUCCEEDED", job
    assert "survived" in n1.lanray("logs", running).stdout
    assert "ran after the restart" in n1.lanray("logs", queued_script).stdout
    assert _alive(n1, n2)  # the head was never restarted, so the worker never left


def _state_dir(node: Node) -> Path:
    return Path(node.lab.node(node.name).root) / "home/.local/state/lanray-tui"


def _alive(n1: Node, n2: Node) -> bool:
    try:
        return node_states(n1).get(n2.address) == "ALIVE"
    except AssertionError:
        return False


def _ray() -> str:
    from lanray_tui.adapters.ray_process import ray_executable

    return ray_executable()


def test_ray_tunes_own_example_unchanged_shows_its_trials_metrics(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    """Ray's tune_basic_example.py, not one line changed, submitted from a worker: each
    trial's mean_loss series comes back from Ray's result files in `metrics --json`."""
    import ray.tune.examples as examples

    n1, n2 = cluster["n1"], cluster["n2"]
    example = Path(examples.__file__).parent / "tune_basic_example.py"
    folder = tmp_path / "tune"
    folder.mkdir()
    (folder / example.name).write_bytes(example.read_bytes())  # byte for byte
    folder.chmod(0o755)
    tmp_path.chmod(0o755)
    job = submit(n2, str(folder / example.name), "--", "--smoke-test")
    done = wait_state(n1, job, FINAL, timeout=240)
    assert done["state"] == "SUCCEEDED", done
    p = n2.lanray("metrics", job, "--json", timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    trials = got["trials"]
    assert len(trials) == 10, list(trials)  # the smoke test's 10 trials
    assert all(len(s["mean_loss"]) == 5 for s in trials.values())  # 5 steps each
    assert got["best"]["metric"] == "mean_loss" and got["best"]["mode"] == "min"
    best = min(trials, key=lambda t: trials[t]["mean_loss"][-1])
    assert got["best"]["trial"] == best
