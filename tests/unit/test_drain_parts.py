"""The parts that make the owner's machine theirs quickly: the kept GCS child that drains
in one call, and the node's own processes telling whether Ray work is left."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from lanray_tui.adapters import system
from lanray_tui.adapters.ray_gcs import GcsError, GcsSession

# A stand-in for ``ray_gcs serve``: the same line protocol, no Ray.
ECHO = """
import json, sys, time
mode = sys.argv[1]
if mode == "fail":
    print(json.dumps({"error": "cannot reach the GCS"}), flush=True); sys.exit(1)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if mode == "mute":
        time.sleep(60)
    if mode == "exit":
        sys.exit(0)
    print(json.dumps({"accepted": True, "got": req}), flush=True)
"""


def session(mode: str) -> GcsSession:
    return GcsSession([sys.executable, "-c", ECHO, mode])


def test_a_kept_child_drains_in_one_call() -> None:
    s = session("ok")
    try:
        s.start()
        assert s.drain("abc", 30, "owner back")  # waits for "ready" the first time
        t0 = time.monotonic()
        got = s.ask({"op": "drain", "node_id": "x", "deadline_s": 5, "reason": "r"}, 5.0)
        assert time.monotonic() - t0 < 0.5  # no new process, no Ray to load
        assert got["got"]["node_id"] == "x"
    finally:
        s.close()
    assert not s.alive


def test_a_child_that_cannot_start_is_one_error_line() -> None:
    s = session("fail")
    with pytest.raises(GcsError, match="cannot reach the GCS"):
        s.drain("abc", 30, "owner back")
    assert not s.alive


def test_a_silent_child_times_out_and_the_next_call_starts_a_fresh_one() -> None:
    s = session("mute")
    try:
        with pytest.raises(GcsError, match="did not answer in time"):
            s.ask({"op": "drain"}, 0.5)
        assert not s.alive
        s.argv[-1] = "ok"
        assert s.drain("abc", 30, "owner back")
    finally:
        s.close()


def test_a_child_that_exits_is_an_error_then_replaced() -> None:
    s = session("exit")
    try:
        with pytest.raises(GcsError, match="exited"):
            s.drain("abc", 30, "owner back")
        s.argv[-1] = "ok"
        assert s.drain("abc", 30, "owner back")
    finally:
        s.close()


@pytest.fixture()
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def titled(procs: list[subprocess.Popen[bytes]], title: str) -> None:
    """A child of this process whose title (argv[0]) is ``title``, as Ray's are."""
    procs.append(subprocess.Popen([title, "30"], executable="sleep"))


def test_ray_work_is_the_workers_with_a_task_or_an_actor(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    import os

    titled(sleepers, "ray::IDLE")
    titled(sleepers, "ray::RayTrainWorker")
    assert system.ray_work(os.getpid()) is None  # no raylet below: cannot tell
    titled(sleepers, "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet")
    time.sleep(0.1)
    assert system.ray_work(os.getpid()) == ["ray::RayTrainWorker"]
    sleepers[1].kill()
    sleepers[1].wait()
    assert system.ray_work(os.getpid()) == []
