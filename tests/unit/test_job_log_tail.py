"""A job's live log when Ray's log tail breaks while the job runs.

Ray's tail is a websocket that can break mid-job (a missed ping on a busy head); real Ray
cannot be made to do that on cue, so a stand-in for Ray's job routes on loopback does: its
tail sends part of the log, then drops the connection. Every line must still arrive once,
in order, and the stream must end only when the job has.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode, web

from lanray_tui.core.job_service import JobService
from tests.helpers.writer import FakeWriter

LOG = "".join(f"line {i}\n" for i in range(1, 9))


class TailingRay:
    """Ray's job routes for one job at a time; the tail plays a script per connection."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.logs = ""  # the whole log so far
        self.tails = 0  # connections to the tail so far
        self.script: list[int] = []  # per connection: how many characters it sends
        self.then: dict[int, Callable[[], None]] = {}  # per connection: done as it closes

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/jobs/", self.submit)
        app.router.add_get("/api/jobs/{sid}", self.info)
        app.router.add_get("/api/jobs/{sid}/logs", self.whole_log)
        app.router.add_get("/api/jobs/{sid}/logs/tail", self.tail)
        return app

    async def submit(self, request: web.Request) -> web.Response:
        req = await request.json()
        sid = req["submission_id"]
        self.jobs[sid] = {**req, "status": "RUNNING", "submission_id": sid}
        return web.json_response({"submission_id": sid})

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.jobs[request.match_info["sid"]])

    async def whole_log(self, request: web.Request) -> web.Response:
        return web.json_response({"logs": self.logs})

    async def tail(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        upto = self.script[self.tails] if self.tails < len(self.script) else len(self.logs)
        self.tails += 1
        text = self.logs[:upto]
        for i in range(0, len(text), 5):  # in chunks that cut lines
            await ws.send_str(text[i : i + 5])
        if self.tails in self.then:
            self.then[self.tails]()
        await ws.close(code=WSCloseCode.GOING_AWAY)
        return ws


@pytest.fixture()
async def ray() -> AsyncIterator[tuple[TailingRay, str]]:
    fake = TailingRay()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def followed_lines(svc: JobService, job: dict[str, Any]) -> list[str]:
    """The log lines that following ``job`` sends, once the stream has ended."""
    writer = FakeWriter()
    stream = svc.streams["job_logs"]({"id": job["id"], "follow": True}, writer)  # type: ignore[arg-type]
    await asyncio.wait_for(stream, 10)
    items = [i.get("result", {}) for i in writer.items()]
    return [i["line"] for i in items if "line" in i]


async def running_job(tmp_path: Path, url: str) -> tuple[JobService, dict[str, Any], str]:
    """A job service on the stand-in, with one job that Ray has taken: (service, job, sid)."""
    svc = JobService(
        tmp_path / "jobs.sqlite3",
        dashboard_url=lambda: url,
        token=lambda: "t" * 64,
        max_running=1,
        cluster_ready=lambda: True,
        python_dir=Path("/opt/py/bin"),
        poll_s=0.05,
    )
    await svc.start()
    job = await svc.handlers["submit"]({"spec": {"command": ["echo", "hi"]}})
    while not svc.queue.get(job["id"]).ray_id:
        await asyncio.sleep(0.02)
    return svc, job, str(svc.queue.get(job["id"]).ray_id)


async def test_a_broken_tail_is_reopened_and_no_line_is_lost_or_doubled(
    ray: tuple[TailingRay, str], tmp_path: Path
) -> None:
    fake, url = ray
    svc, job, sid = await running_job(tmp_path, url)
    try:
        # The job has written 5 lines. The first tail breaks in line 3 while the job runs;
        # the second sends all 5, and as it closes the job writes the rest and ends.
        fake.logs = LOG[: LOG.index("line 6")]
        fake.script = [LOG.index("line 3") + 2, len(fake.logs)]

        def end() -> None:
            fake.logs = LOG
            fake.jobs[sid].update(status="SUCCEEDED", driver_exit_code=0)

        fake.then = {2: end}
        assert await followed_lines(svc, job) == [f"line {i}" for i in range(1, 9)]
        assert fake.tails == 2
    finally:
        svc.close()


async def test_lines_the_last_tail_missed_come_from_the_whole_log(
    ray: tuple[TailingRay, str], tmp_path: Path
) -> None:
    fake, url = ray
    svc, job, sid = await running_job(tmp_path, url)
    try:
        # The one tail stops short of the end (mid-line) as the job ends.
        fake.logs = LOG + "no newline at the end"
        fake.script = [LOG.index("line 7") + 3]
        fake.then = {1: lambda: fake.jobs[sid].update(status="FAILED", driver_exit_code=1)}
        want = [f"line {i}" for i in range(1, 9)] + ["no newline at the end"]
        assert await followed_lines(svc, job) == want
        assert fake.tails == 1
    finally:
        svc.close()
