"""The job queue without Ray: specs, ordering, priorities, states, persistence."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanray_tui.core.jobs import (
    CANCELLED,
    FAILED,
    LOST,
    QUEUED,
    RUNNING,
    SUBMITTED,
    SUCCEEDED,
    JobError,
    JobQueue,
    JobSpec,
    last_log_line,
    summarize_failure,
)


def spec(name: str = "", priority: int = 0, **kw: object) -> JobSpec:
    doc: dict[str, object] = {"command": ["echo", name or "hi"], "name": name, "priority": priority}
    doc.update(kw)
    return JobSpec.from_json(doc)


@pytest.fixture()
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    q = JobQueue(tmp_path / "jobs.sqlite3")
    yield q
    q.close()


# ----- specs ----------------------------------------------------------------------------------


def test_script_spec_and_its_entrypoint() -> None:
    s = JobSpec.from_json(
        {"script": "train.py", "args": ["--lr", "0.1 x"], "working_dir": "gcs://_ray_pkg_1.zip"}
    )
    assert s.name == "train.py"
    assert s.entrypoint() == "python train.py --lr '0.1 x'"
    assert s.entrypoint("/opt/py") == "/opt/py train.py --lr '0.1 x'"


def test_command_spec_names_the_script_it_runs() -> None:
    assert JobSpec.from_json({"command": ["python", "a/b.py", "x"]}).name == "b.py"
    assert JobSpec.from_json({"command": ["python", "-c", "print(1)"]}).name == "python"
    assert JobSpec.from_json({"command": ["/bin/sleep", "1"]}).name == "sleep"
    assert JobSpec.from_json({"command": ["sleep", "1"], "name": "nap"}).name == "nap"


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({}, "either a script or a command"),
        ({"script": "a.py", "command": ["x"], "working_dir": "gcs://p.zip"}, "not both"),
        ({"script": "a.py"}, "needs the working_dir"),
        ({"script": "/etc/passwd", "working_dir": "gcs://p.zip"}, "inside the working_dir"),
        ({"script": "../a.py", "working_dir": "gcs://p.zip"}, "inside the working_dir"),
        ({"command": ["x"], "working_dir": "/home/me"}, "upload it first"),
        ({"command": "echo hi"}, "list of strings"),
        ({"command": ["x"], "num_cpus": "two"}, "must be a number"),
        ({"command": ["x"], "num_gpus": -1}, "between 0 and"),
        ({"command": ["x"], "priority": 1.5}, "whole number"),
        ({"command": ["x"], "priority": 10**6}, "between"),
        ({"command": ["x"], "env": {"1BAD": "x"}}, "not an environment variable name"),
        ({"command": ["x"], "env": {"A": 1}}, "map variable names to strings"),
        ({"command": ["x"], "bogus": 1}, "unknown job spec field 'bogus'"),
        ("echo", "JSON object"),
    ],
)
def test_bad_specs_say_why_in_one_line(doc: object, says: str) -> None:
    with pytest.raises(JobError) as err:
        JobSpec.from_json(doc)
    assert says in str(err.value) and "\n" not in str(err.value)


# ----- ordering and states ------------------------------------------------------------------


def test_fifo_by_default(queue: JobQueue) -> None:
    ids = [queue.add(spec(f"j{i}")).id for i in range(5)]
    assert [j.id for j in queue.queued()] == ids
    assert queue.next_queued().id == ids[0]  # type: ignore[union-attr]
    assert all(i.startswith("j-") and len(i) == 6 for i in ids)
    assert len(set(ids)) == 5


def test_higher_priority_first_then_fifo(queue: JobQueue) -> None:
    a = queue.add(spec("a")).id
    b = queue.add(spec("b", priority=5)).id
    c = queue.add(spec("c", priority=-1)).id
    d = queue.add(spec("d", priority=5)).id
    e = queue.add(spec("e")).id
    assert [j.id for j in queue.queued()] == [b, d, a, e, c]
    # the listing stays in submission order
    assert [j.id for j in queue.jobs()] == [a, b, c, d, e]


def test_transitions_are_compare_and_set(queue: JobQueue) -> None:
    job = queue.add(spec("x"), submitter="me@n1")
    assert job.state == QUEUED and job.submitter == "me@n1" and job.attempt == 1
    moved = queue.transition(job.id, [QUEUED], SUBMITTED, ray_id="r1", submitted=1.0)
    assert moved is not None and moved.state == SUBMITTED and moved.ray_id == "r1"
    # a second actor that still thinks it is queued loses
    assert queue.transition(job.id, [QUEUED], CANCELLED) is None
    assert queue.get(job.id).state == SUBMITTED
    assert queue.transition(job.id, [SUBMITTED], RUNNING, started=2.0) is not None
    assert [j.id for j in queue.active()] == [job.id]
    done = queue.transition(job.id, [SUBMITTED, RUNNING], SUCCEEDED, ended=3.0, exit_code=0)
    assert done is not None and done.exit_code == 0 and done.ended == 3.0
    assert queue.active() == [] and queue.next_queued() is None
    assert not queue.update(job.id, [QUEUED], message="no")
    with pytest.raises(ValueError):
        queue.update(job.id, [SUCCEEDED], state=QUEUED)
    with pytest.raises(ValueError):
        queue.update(job.id, [SUCCEEDED], id="j-0000")


def test_retry_requeues_at_the_back_with_a_new_attempt(queue: JobQueue) -> None:
    first = queue.add(spec("first")).id
    queue.transition(first, [QUEUED], SUBMITTED, ray_id="r1")
    queue.transition(first, [SUBMITTED], FAILED, ended=5.0, exit_code=1, message="boom")
    second = queue.add(spec("second")).id
    again = queue.retry(first)
    assert again.state == QUEUED and again.attempt == 2
    assert again.ray_id == "" and again.exit_code is None and again.message == ""
    assert [j.id for j in queue.queued()] == [second, first]


@pytest.mark.parametrize("state", [QUEUED, SUBMITTED, RUNNING, SUCCEEDED])
def test_only_failed_lost_or_cancelled_jobs_retry(queue: JobQueue, state: str) -> None:
    job = queue.add(spec("x"))
    if state != QUEUED:
        queue.transition(job.id, [QUEUED], state)
    with pytest.raises(JobError, match="only failed, lost or cancelled"):
        queue.retry(job.id)


@pytest.mark.parametrize("state", [FAILED, LOST, CANCELLED])
def test_retryable_states(queue: JobQueue, state: str) -> None:
    job = queue.add(spec("x"))
    queue.transition(job.id, [QUEUED], state)
    assert queue.retry(job.id).state == QUEUED


def test_unknown_job_is_one_line(queue: JobQueue) -> None:
    with pytest.raises(JobError, match="no job 'j-nope'"):
        queue.get("j-nope")


def test_concurrent_adds_from_threads(queue: JobQueue) -> None:
    def add_many() -> None:
        for _ in range(25):
            queue.add(spec("t"))

    threads = [threading.Thread(target=add_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = queue.jobs()
    assert len(jobs) == 100 and len({j.id for j in jobs}) == 100
    assert queue.counts() == {QUEUED: 100}


# ----- persistence --------------------------------------------------------------------------


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    q = JobQueue(path)
    a = q.add(spec("a", env={"X": "1"}, num_cpus=2)).id
    b = q.add(spec("b", priority=3)).id
    q.transition(a, [QUEUED], FAILED, message="exit 1", exit_code=1, log_tail="l1\nl2")
    q.close()
    q = JobQueue(path)
    try:
        ja = q.get(a)
        assert ja.state == FAILED and ja.message == "exit 1" and ja.log_tail == "l1\nl2"
        assert ja.spec.env == {"X": "1"} and ja.spec.num_cpus == 2.0
        assert [j.id for j in q.queued()] == [b]
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        q.close()


def test_a_killed_writer_loses_nothing_it_reported(tmp_path: Path) -> None:
    """A process that is SIGKILLed right after add() returned: the job is on disk."""
    path = tmp_path / "jobs.sqlite3"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from lanray_tui.core.jobs import JobQueue, JobSpec\n"
        "q = JobQueue(Path(sys.argv[1]))\n"
        "for i in range(3):\n"
        "    print(q.add(JobSpec.from_json({'command': ['echo', str(i)]})).id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert p.returncode == -9
    reported = p.stdout.split()
    q = JobQueue(path)
    try:
        assert [j.id for j in q.queued()] == reported
    finally:
        q.close()


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(JobError, match="newer lanray-tui"):
        JobQueue(path)


def test_a_queue_of_schema_1_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    q = JobQueue(path)
    job = q.add(spec("old"))
    q.close()
    db = sqlite3.connect(path)  # the table as lanray-tui 0.1 made it: no node column
    db.execute("ALTER TABLE jobs DROP COLUMN node")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    q = JobQueue(path)
    try:
        again = q.get(job.id)
        assert again.name == "old" and again.node == ""
        assert q.transition(job.id, [QUEUED], SUBMITTED, node="10.0.0.2") is not None
        assert q.get(job.id).node == "10.0.0.2"
    finally:
        q.close()


def test_a_damaged_database_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JobError, match="cannot open the job database"):
        JobQueue(path)


# ----- failure reasons ----------------------------------------------------------------------


def test_failure_reason_is_rays_first_sentence_and_the_last_log_line() -> None:
    msg = (
        "Job entrypoint command failed with exit code 1, last available logs (truncated to "
        "20,000 chars):\nTraceback...\nValueError: bad"
    )
    logs = (
        "2026-01-01 00:00:00,000\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
        "Running entrypoint for job x: python a.py\n"
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1\n'
        "ValueError: bad\n"
    )
    assert summarize_failure(msg, logs) == (
        "Job entrypoint command failed with exit code 1: ValueError: bad"
    )
    assert summarize_failure("Job supervisor actor died", "") == "Job supervisor actor died"
    assert summarize_failure("", "") == "the job failed"
    assert last_log_line("x\n2026 INFO job_manager.py:1 -- setting up\n\n") == "x"
