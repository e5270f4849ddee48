"""Which running Ray a restarted agent may adopt: a real process that looks like
``ray start --block`` (no Ray needed), with and without a matching record."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lanray_tui.core import ray_record
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.ray_record import RayRecord


@pytest.fixture()
def fake_ray(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    temp = tmp_path / "ray"
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "start", "--block"]
    p = subprocess.Popen([*argv, "--temp-dir", str(temp)])
    try:
        yield p, temp
    finally:
        p.kill()
        p.wait()


def want(temp: Path, **changes: object) -> RayRecord:
    base = RayRecord(0, 0.0, "c1", "lab", "host", "10.0.0.1", "10.0.0.1:6379",
                     ray_record.token_digest("tok"), str(temp))  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_nothing_runs_nothing_to_adopt(tmp_path: Path) -> None:
    assert ray_record.adoptable(tmp_path / "ray.json", want(tmp_path / "ray")) is None


def test_a_recorded_ray_of_this_cluster_is_adopted(
    fake_ray: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    p, temp = fake_ray
    path = tmp_path / "ray.json"
    ray_record.record_started(path, p.pid, want(temp))
    assert path.stat().st_mode & 0o777 == 0o600
    assert ray_record.adoptable(path, want(temp)) == p.pid
    assert ray_record.running_ray(path, temp) == p.pid


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"cluster_id": "other", "cluster_name": "theirs"}, "for another cluster ('theirs')"),
        ({"token_sha256": "0" * 64}, "for another cluster"),
        ({"role": "worker"}, "as a worker of 10.0.0.1:6379"),
        ({"node_ip": "10.0.0.7"}, "on 10.0.0.7, not 10.0.0.1"),
        ({"tls_sha256": "a" * 64}, "without this node's current TLS certificate"),
    ],
)
def test_a_ray_of_something_else_is_refused_in_one_line(
    fake_ray: tuple[subprocess.Popen[bytes], Path],
    tmp_path: Path,
    changes: dict[str, object],
    says: str,
) -> None:
    p, temp = fake_ray
    path = tmp_path / "ray.json"
    ray_record.record_started(path, p.pid, want(temp, **changes))
    with pytest.raises(LanrayError, match="leave --force") as err:
        ray_record.adoptable(path, want(temp))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_ray_an_older_agent_started_in_clear_is_not_adopted(
    fake_ray: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    p, temp = fake_ray
    path = tmp_path / "ray.json"
    ray_record.record_started(path, p.pid, want(temp))
    doc = json.loads(path.read_text())
    del doc["tls_sha256"]  # a record from before Ray ran over TLS
    path.write_text(json.dumps(doc))
    with pytest.raises(LanrayError, match="without this node's current TLS certificate"):
        ray_record.adoptable(path, want(temp, tls_sha256="b" * 64))


def test_an_unrecorded_ray_is_refused(
    fake_ray: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    p, temp = fake_ray
    with pytest.raises(LanrayError, match=f"pid {p.pid}.*no agent recorded it"):
        ray_record.adoptable(tmp_path / "ray.json", want(temp))


def test_a_stale_record_is_not_a_running_ray(
    fake_ray: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    p, temp = fake_ray
    path = tmp_path / "ray.json"
    ray_record.record_started(path, p.pid, want(temp))
    rec = ray_record.load(path)
    assert rec is not None
    ray_record.save(path, replace(rec, started=rec.started - 100))  # a reused PID
    p.kill()
    p.wait()
    assert ray_record.running_ray(path, temp) is None
    assert ray_record.adoptable(path, want(temp)) is None


@pytest.mark.parametrize("junk", ["", "{", "[]", '{"pid": "x"}'])
def test_a_broken_record_reads_as_none(tmp_path: Path, junk: str) -> None:
    path = tmp_path / "ray.json"
    path.write_text(junk)
    assert ray_record.load(path) is None
