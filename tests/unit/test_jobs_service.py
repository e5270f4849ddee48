"""The scheduler's logic against a stand-in for Ray's Jobs API on loopback.

Real Ray runs in the lab tests (test_jobs_lab.py); here the paths that real Ray cannot be
made to take on cue: a crash between two steps, a refused submission, a head that forgot
an upload. The stand-in speaks the same REST routes and moves its jobs when a test says so.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.adapters import ray_jobs
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.job_service import LOST_REASON, JobService, package_file_name
from lanray_tui.core.jobs import QUEUED, RUNNING, JobQueue, JobSpec
from tests.helpers.writer import FakeWriter

TLS_ENV = {
    "RAY_USE_TLS": "1",
    "RAY_TLS_SERVER_CERT": "/n/node.pem",
    "RAY_TLS_SERVER_KEY": "/n/node.key",
    "RAY_TLS_CA_CERT": "/n/ca.pem",
}


class FakeRay:
    """Ray's job routes, in memory: jobs stay where a test puts them."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.packages: dict[str, bytes] = {}
        self.posts = 0
        self.lock = threading.Lock()

    def set(self, sid: str, status: str, **extra: Any) -> None:
        with self.lock:
            self.jobs[sid].update(status=status, **extra)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                with fake.lock:
                    if parts[:2] == ["api", "packages"]:
                        ok = parts[3] in fake.packages
                        self.reply(200 if ok else 404, b"" if ok else b"no such package")
                    elif parts[:2] == ["api", "jobs"] and parts[2] in fake.jobs:
                        job = fake.jobs[parts[2]]
                        if len(parts) == 4 and parts[3] == "logs":
                            self.reply(200, {"logs": job.get("logs", "")})
                        else:
                            self.reply(200, job)
                    else:
                        self.reply(404, b"Job does not exist")

            def do_PUT(self) -> None:
                parts = self.path.strip("/").split("/")
                with fake.lock:
                    fake.packages[parts[3]] = self.body()
                self.reply(200, b"")

            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                with fake.lock:
                    if parts == ["api", "jobs"]:
                        req = json.loads(self.body())
                        fake.posts += 1
                        if "REJECT" in req["entrypoint"]:
                            self.reply(400, b"Traceback...\nValueError: bad runtime_env")
                            return
                        sid = req["submission_id"]
                        fake.jobs[sid] = {**req, "status": "PENDING", "submission_id": sid}
                        self.reply(200, {"submission_id": sid})
                    elif len(parts) == 4 and parts[3] == "stop" and parts[2] in fake.jobs:
                        fake.jobs[parts[2]]["status"] = "STOPPED"
                        self.reply(200, {"stopped": True})
                    else:
                        self.reply(404, b"Job does not exist")

        return Handler


@pytest.fixture()
def fake() -> Iterator[tuple[FakeRay, str]]:
    ray = FakeRay()
    server = ThreadingHTTPServer(("127.0.0.1", 0), ray.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ray, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Service:
    def __init__(self, db: Path, url: str, max_running: int = 1) -> None:
        self.ready = True
        self.svc = JobService(
            db,
            dashboard_url=lambda: url,
            token=lambda: "t" * 64,
            max_running=max_running,
            cluster_ready=lambda: self.ready,
            tls_env=lambda: TLS_ENV,
            python_dir=Path("/opt/py/bin"),
            poll_s=0.05,
        )

    async def op(self, name: str, **req: Any) -> Any:
        return await self.svc.handlers[name](req)

    async def states(self) -> dict[str, str]:
        return {j["id"]: j["state"] for j in (await self.op("jobs"))["jobs"]}

    async def until(self, pred: Callable[[], Any], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred()
            if asyncio.iscoroutine(got):
                got = await got
            if got:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("timed out")


@pytest.fixture()
async def service(tmp_path: Path, fake: tuple[FakeRay, str]) -> AsyncIterator[Service]:
    s = Service(tmp_path / "jobs.sqlite3", fake[1], max_running=2)
    await s.svc.start()
    try:
        yield s
    finally:
        s.svc.close()


def cmd(*argv: str, **kw: Any) -> dict[str, Any]:
    return {"command": list(argv), **kw}


async def test_priority_slots_and_waiting_for_the_cluster(
    service: Service, fake: tuple[FakeRay, str]
) -> None:
    ray, _ = fake
    service.ready = False
    ids = [
        (await service.op("submit", spec=cmd("a"), submitter="me@n1"))["id"],
        (await service.op("submit", spec=cmd("b")))["id"],
        (await service.op("submit", spec=cmd("c", priority=5)))["id"],
        (await service.op("submit", spec=cmd("d")))["id"],
    ]
    await asyncio.sleep(0.3)
    assert ray.posts == 0  # the cluster is not ready: everything waits
    service.ready = True
    await service.until(lambda: ray.posts == 2)
    await asyncio.sleep(0.2)
    st = await service.states()
    assert [st[i] for i in ids] == ["SUBMITTED", "QUEUED", "SUBMITTED", "QUEUED"]
    sent = {j["metadata"]["lanray_job"]: j for j in ray.jobs.values()}
    assert set(sent) == {ids[0], ids[2]}
    a = sent[ids[0]]
    assert a["entrypoint"] == "a"
    assert a["runtime_env"]["env_vars"]["PATH"] == "/opt/py/bin:${PATH}"
    assert a["metadata"]["lanray_submitter"] == "me@n1"
    for job in sent.values():
        ray.set(job["submission_id"], "RUNNING", driver_info={"node_ip_address": "10.0.0.7"})
    await service.until(lambda: _all(service, [ids[0], ids[2]], RUNNING))
    assert (await service.op("job", id=ids[0]))["node"] == "10.0.0.7"  # where its driver runs
    ray.set(a["submission_id"], "SUCCEEDED", driver_exit_code=0, end_time=int(time.time() * 1e3))
    await service.until(lambda: ray.posts == 3)
    # the POST is answered a moment before the queue records it: wait for the record
    await service.until(lambda: _all(service, [ids[1]], "SUBMITTED"))
    st = await service.states()
    assert st[ids[0]] == "SUCCEEDED" and st[ids[3]] == "QUEUED"


async def _all(service: Service, ids: list[str], state: str) -> bool:
    st = await service.states()
    return all(st[i] == state for i in ids)


async def test_refused_and_failed_jobs_say_why(service: Service, fake: tuple[FakeRay, str]) -> None:
    ray, _ = fake
    refused = (await service.op("submit", spec=cmd("REJECT")))["id"]
    failing = (await service.op("submit", spec=cmd("python", "x.py")))["id"]
    await service.until(lambda: ray.posts == 2)
    await service.until(lambda: _all(service, [refused], "FAILED"))
    job = await service.op("job", id=refused)
    assert job["message"] == "Ray refused the job: ValueError: bad runtime_env"
    sid = next(iter(ray.jobs))
    ray.set(
        sid,
        "FAILED",
        driver_exit_code=3,
        message="Job entrypoint command failed with exit code 3, last available logs:\n...",
        logs="Running entrypoint for job x: python x.py\nTraceback\nKeyError: 'lr'\n",
    )
    await service.until(lambda: _all(service, [failing], "FAILED"))
    job = await service.op("job", id=failing)
    assert job["exit_code"] == 3
    assert job["message"] == "Job entrypoint command failed with exit code 3: KeyError: 'lr'"
    assert job["log_tail"].endswith("KeyError: 'lr'")


async def test_a_restarted_agent_follows_on_loses_and_adopts(
    tmp_path: Path, fake: tuple[FakeRay, str]
) -> None:
    """What a SIGKILLed agent left: a job Ray still runs, one Ray forgot (the head restarted),
    a job it was handing to Ray when it died (Ray got it), and a plain queued one."""
    ray, url = fake
    db = tmp_path / "jobs.sqlite3"
    q = JobQueue(db)
    spec = JobSpec.from_json(cmd("x"))
    still, forgotten, mid, queued = (q.add(spec).id for _ in range(4))
    for job_id, state, sid in ((still, RUNNING, "r-still"), (forgotten, RUNNING, "r-gone")):
        q.transition(job_id, [QUEUED], state, ray_id=sid, submitted=1.0, started=2.0)
    q.update(mid, [QUEUED], ray_id="r-mid")
    q.close()
    ray.jobs["r-still"] = {"status": "RUNNING", "submission_id": "r-still"}
    ray.jobs["r-mid"] = {"status": "RUNNING", "submission_id": "r-mid"}

    s = Service(db, url, max_running=3)
    await s.svc.start()
    try:
        await s.until(lambda: ray.posts == 1)
        await asyncio.sleep(0.2)
        st = await s.states()
        assert st == {still: RUNNING, forgotten: "LOST", mid: RUNNING, queued: "SUBMITTED"}
        assert (await s.op("job", id=forgotten))["message"] == LOST_REASON
        assert ray.posts == 1  # the adopted job was not submitted twice
        ray.set("r-still", "SUCCEEDED", driver_exit_code=0)
        await s.until(lambda: _all(s, [still], "SUCCEEDED"))
    finally:
        s.svc.close()


async def test_cancel_in_every_state(service: Service, fake: tuple[FakeRay, str]) -> None:
    ray, _ = fake
    running = (await service.op("submit", spec=cmd("long")))["id"]
    other = (await service.op("submit", spec=cmd("other")))["id"]
    queued = (await service.op("submit", spec=cmd("waits")))["id"]
    await service.until(lambda: ray.posts == 2)
    got = await service.op("cancel", id=queued)
    assert got["state"] == "CANCELLED" and got["changed"]
    got = await service.op("cancel", id=running)
    assert got["state"] == "CANCELLED" and got["changed"] and got["message"] == "cancelled"
    assert ray.jobs[got["ray_id"]]["status"] == "STOPPED"
    got = await service.op("cancel", id=running)
    assert not got["changed"]
    again = await service.op("retry", id=queued)
    assert again["state"] == "QUEUED" and again["attempt"] == 2
    with pytest.raises(LanrayError, match="only failed, lost or cancelled"):
        await service.op("retry", id=other)
    with pytest.raises(LanrayError, match="no job 'j-none'"):
        await service.op("cancel", id="j-none")
    with pytest.raises(LanrayError, match="which job"):
        await service.op("cancel")


async def test_uploads_are_kept_and_given_back_to_a_forgetful_head(
    service: Service, fake: tuple[FakeRay, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ray, _ = fake
    ray.packages["_ray_pkg_0123456789abcdef.zip"] = b"zip bytes"

    def fetch(gcs: str, token: str, tls: Any, uri: str, dest: Path, timeout: float = 60.0) -> None:
        assert tls == TLS_ENV
        name = uri.partition("://")[2]
        if name not in ray.packages:
            raise ray_jobs.RayJobsError(f"the cluster does not hold {uri}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(ray.packages[name])

    monkeypatch.setattr(ray_jobs, "fetch_package", fetch)
    blocker = (await service.op("submit", spec=cmd("block")))["id"]
    blocker2 = (await service.op("submit", spec=cmd("block2")))["id"]
    kept = (
        await service.op(
            "submit", spec={"script": "s.py", "working_dir": "gcs://_ray_pkg_0123456789abcdef.zip"}
        )
    )["id"]
    never = (
        await service.op(
            "submit", spec={"script": "s.py", "working_dir": "gcs://_ray_pkg_fedcba9876543210.zip"}
        )
    )["id"]
    copy = service.svc.packages_dir / "_ray_pkg_0123456789abcdef.zip"
    await service.until(copy.is_file)
    await service.until(lambda: ray.posts == 2)  # both blockers are in Ray before they end
    ray.packages.clear()  # the head restarted: its uploads are gone
    for sid in list(ray.jobs):
        ray.set(sid, "SUCCEEDED", driver_exit_code=0)
    await service.until(lambda: _all(service, [blocker, blocker2], "SUCCEEDED"))
    await service.until(lambda: _all(service, [kept], "SUBMITTED"))
    assert (
        ray.packages["_ray_pkg_0123456789abcdef.zip"] == b"zip bytes"
    )  # uploaded again from the copy
    await service.until(lambda: _all(service, [never], "FAILED"))
    assert "no copy was kept" in (await service.op("job", id=never))["message"]
    with pytest.raises(LanrayError, match="no longer kept"):
        await service.op("retry", id=never)


async def test_the_package_op_says_whether_a_submit_can_skip_its_upload(
    service: Service, fake: tuple[FakeRay, str]
) -> None:
    ray, _ = fake
    held, gone = "gcs://_ray_pkg_0123456789abcdef.zip", "gcs://_ray_pkg_fedcba9876543210.zip"
    ray.packages[held.partition("://")[2]] = b"zip bytes"
    assert await service.op("package", uri=held) == {"held": True}  # Ray holds it
    assert await service.op("package", uri=gone) == {"held": False}
    kept = service.svc.packages_dir / gone.partition("://")[2]
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(b"zip bytes")
    assert await service.op("package", uri=gone) == {"held": True}  # the host's copy
    for bad in ("gcs://a/b", "gcs://../_ray_pkg_0123.zip", "https://x/y.zip"):
        assert await service.op("package", uri=bad) == {"held": False}
    with pytest.raises(LanrayError, match="which package"):
        await service.op("package")
    service.svc.dashboard_url = lambda: "http://127.0.0.1:9"  # Ray's API does not answer
    assert await service.op("package", uri=held) == {"held": False}  # upload: it says why


BAD_URIS = [
    "gcs:///tmp/escape.zip",  # absolute
    "gcs://../_ray_pkg_0123.zip",  # ..
    "gcs://..",
    "gcs://a/b",
    "gcs://evil.zip",  # not Ray's _ray_pkg_<hex>.zip form
    "gcs://_ray_pkg_XYZ.zip",
]


async def test_bad_package_uris_fail_their_job_alone(
    service: Service, fake: tuple[FakeRay, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ray, _ = fake
    ray.packages["_ray_pkg_00ff.zip"] = b"zip bytes"
    fetched: list[str] = []

    def fetch(gcs: str, token: str, tls: Any, uri: str, dest: Path, timeout: float = 60.0) -> None:
        assert tls == TLS_ENV
        fetched.append(uri)
        assert dest.parent == service.svc.packages_dir
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(ray.packages[uri.partition("://")[2]])

    monkeypatch.setattr(ray_jobs, "fetch_package", fetch)
    service.ready = False
    # The bad ones come first in the queue: a stall behind them would keep the good one waiting.
    bad = [
        (await service.op("submit", spec={"script": "s.py", "working_dir": u, "priority": 9}))["id"]
        for u in BAD_URIS
    ]
    good = (
        await service.op(
            "submit", spec={"script": "s.py", "working_dir": "gcs://_ray_pkg_00ff.zip"}
        )
    )["id"]
    service.ready = True
    await service.until(lambda: _all(service, [good], "SUBMITTED"))
    await service.until(lambda: _all(service, bad, "FAILED"))
    for job_id, uri in zip(bad, BAD_URIS, strict=True):
        job = await service.op("job", id=job_id)
        assert job["message"].startswith(f"its working_dir {uri!r} is not a package Ray made")
        with pytest.raises(LanrayError, match="is not a package Ray made"):
            await service.op("retry", id=job_id)
    assert ray.posts == 1  # only the good job reached Ray
    assert service.svc._last_error == ""  # and the scheduler never tripped over the bad ones
    await service.until(lambda: fetched == ["gcs://_ray_pkg_00ff.zip"])
    assert not Path("/tmp/escape.zip").exists()
    assert sorted(p.name for p in service.svc.packages_dir.iterdir()) == ["_ray_pkg_00ff.zip"]


def test_package_file_name() -> None:
    assert package_file_name("gcs://_ray_pkg_0123456789abcdef.zip") == (
        "_ray_pkg_0123456789abcdef.zip"
    )
    for uri in [*BAD_URIS, "https://_ray_pkg_00.zip", "gcs://_ray_pkg_00.zip/", "gcs://"]:
        with pytest.raises(LanrayError, match="not a package Ray made"):
            package_file_name(uri)


async def test_job_logs_of_a_finished_job(service: Service, fake: tuple[FakeRay, str]) -> None:
    ray, _ = fake
    job_id = (await service.op("submit", spec=cmd("echo", "hi")))["id"]
    await service.until(lambda: ray.posts == 1)
    sid = next(iter(ray.jobs))
    ray.set(sid, "SUCCEEDED", driver_exit_code=0, logs="line 1\nline 2\n")
    await service.until(lambda: _all(service, [job_id], "SUCCEEDED"))
    writer = FakeWriter()
    await service.svc.streams["job_logs"]({"id": job_id, "follow": True}, writer)  # type: ignore[arg-type]
    items = writer.items()
    assert items[-1] == {"end": True}
    results = [i["result"] for i in items[:-1]]
    assert [r["line"] for r in results if "line" in r] == ["line 1", "line 2"]
    assert results[0]["job"]["id"] == job_id and results[-1]["job"]["state"] == "SUCCEEDED"
    writer = FakeWriter()
    await service.svc.streams["job_logs"]({"id": "j-none"}, writer)  # type: ignore[arg-type]
    assert writer.items() == [{"ok": False, "error": "no job 'j-none' (see 'lanray-tui jobs')"}]


async def test_a_job_that_would_outlive_the_cluster_is_refused(service: Service) -> None:
    """host --expires: a job declaring a longer --max-time than the cluster has left is
    refused with one line; one that fits, or declares nothing, is queued."""
    service.svc.ends_at = lambda: time.time() + 1800  # 30 minutes left
    with pytest.raises(LanrayError, match=r"the cluster ends at .* no time for a job of"):
        await service.op("submit", spec=cmd("sleep", "1", max_time_s=3600))
    ok = await service.op("submit", spec=cmd("sleep", "1", max_time_s=600))
    plain = await service.op("submit", spec=cmd("sleep", "1"))
    assert ok["state"] in ("QUEUED", "SUBMITTED", "RUNNING") and plain["id"] != ok["id"]
    with pytest.raises(LanrayError, match="max_time_s must be"):
        await service.op("submit", spec=cmd("sleep", "1", max_time_s=-5))


async def test_metrics_come_from_rays_result_files_of_the_job(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's Ray Tune results: in its storage folder, and under ~/ray_results here while
    it ran (an unchanged Tune script writes there); files of other times are not its own."""
    import os

    home = tmp_path / "home"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    job = await service.op("submit", spec=cmd("sleep", "1"))
    trial = home / "ray_results" / "easy_objective_x" / "trial_0"
    trial.mkdir(parents=True)
    rows = [{"mean_loss": v, "training_iteration": i} for i, v in enumerate([3.0, 2.0, 1.5])]
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows))
    old = home / "ray_results" / "older" / "trial_9"
    old.mkdir(parents=True)
    (old / "result.json").write_text(json.dumps({"mean_loss": 9.0}))
    os.utime(old / "result.json", (time.time() - 7200, time.time() - 7200))
    stored = service.svc.results_dir(job["id"]) / "run" / "trial_s"
    stored.mkdir(parents=True)
    (stored / "result.json").write_text(json.dumps({"accuracy": 0.9}))
    got = await service.op("metrics", id=job["id"])
    assert got["trials"] == {"trial_0": {"mean_loss": [3.0, 2.0, 1.5]},
                             "trial_s": {"accuracy": [0.9]}}  # fmt: skip
    assert got["best"] is None  # no metric every trial reports
    got = await service.op("metrics", id=job["id"], metric="mean_loss", mode="min")
    assert got["best"] == {"trial": "trial_0", "metric": "mean_loss", "mode": "min"}
    with pytest.raises(LanrayError, match="no job"):
        await service.op("metrics", id="j-ffff")
