"""The ``job_logs`` stream of the host agent's job service: a job's state, then its log.

:class:`JobLogStream` sends ``{"job": {...}}`` first and last (and on each state change), and
``{"line": ...}`` per log line. With ``follow`` it waits for a queued job to start and passes
on Ray's log tail until the job ends; otherwise it sends the log as it is now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..adapters import ray_jobs
from ..adapters.ray_jobs import RayJobNotFound, RayJobs, RayJobsError
from .framing import ok_line
from .jobs_queue import JobQueue
from .jobs_records import ACTIVE, FINAL, QUEUED, Job
from .protocol_replies import JobLogItem
from .protocol_requests import JobLogsRequest

log = logging.getLogger("lanray.jobs")

FINAL_WAIT_S = 10.0  # how long a log stream waits for the job's final state
TAIL_RETRY_S = 0.5  # how soon a broken log tail of a running job is opened again


class JobLogStream:
    """Streams one job's log to a client. ``api`` makes a client of the cluster's current
    Jobs API; ``wake`` asks the scheduler for a poll now (to record a job's end sooner)."""

    def __init__(
        self, queue: JobQueue, api: Callable[[], RayJobs], wake: Callable[[], None]
    ) -> None:
        self.queue = queue
        self.api = api
        self.wake = wake

    async def run(self, req: JobLogsRequest, writer: asyncio.StreamWriter) -> None:
        """Stream the job's log (errors are the caller's to answer)."""
        job = self.queue.get(req.id)
        follow = req.follow

        def send(item: JobLogItem) -> None:
            writer.write(ok_line(item))

        send(JobLogItem(job=job.view()))
        await writer.drain()
        # A queued job has no log yet: wait for Ray to take it.
        last_state, beat = job.state, time.monotonic()
        while follow and (job.state == QUEUED or (job.state in ACTIVE and not job.ray_id)):
            await asyncio.sleep(0.2)
            job = self.queue.get(job.id)
            if job.state != last_state or time.monotonic() - beat > 5:
                send(JobLogItem(job=job.view()))
                await writer.drain()  # raises when the client went away
                last_state, beat = job.state, time.monotonic()
        if follow and job.state in ACTIVE:
            await self._follow(job, send, writer)
            job = await self._final_state(job.id)
        elif job.ray_id:
            try:
                text = await asyncio.to_thread(self.api().logs, job.ray_id)
            except RayJobsError:
                text = job.log_tail  # Ray lost it: the tail kept when it ended
            for line in text.splitlines():
                send(JobLogItem(line=line))
        send(JobLogItem(job=job.view()))
        await writer.drain()

    async def _follow(
        self, job: Job, send: Callable[[JobLogItem], None], writer: asyncio.StreamWriter
    ) -> None:
        """Pass on Ray's log tail until the job ends, each line once.

        Ray's tail can break while the job runs (its websocket misses a ping on a busy
        head): it is opened again, and since Ray's tail always starts from the top, what was
        already sent is skipped. Once the job has ended, whatever the tail missed at the end
        comes from the whole log."""
        lines = _LineSplitter(send)
        while True:
            skip = lines.chars
            try:
                async for chunk in self.api().tail(job.ray_id):
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    lines.feed(chunk[skip:])
                    skip = 0
                    await writer.drain()
            except RayJobsError as exc:
                log.info("job %s: log tail ended: %s", job.id, exc)
            if not await self._runs_in_ray(job):
                break
            await writer.drain()  # raises when the client went away
            await asyncio.sleep(TAIL_RETRY_S)
        try:
            text = await asyncio.to_thread(self.api().logs, job.ray_id)
        except RayJobsError:
            text = ""
        lines.feed(text[lines.chars :])
        lines.flush()
        await writer.drain()

    async def _runs_in_ray(self, job: Job) -> bool:
        """Whether Ray still runs ``job`` (as the queue last saw it, when Ray cannot say)."""
        try:
            info = await asyncio.to_thread(self.api().info, job.ray_id)
        except RayJobNotFound:
            return False
        except RayJobsError:
            return self.queue.get(job.id).state in ACTIVE
        return info.status in (ray_jobs.PENDING, ray_jobs.RUNNING)

    async def _final_state(self, job_id: str) -> Job:
        """The job once the scheduler has recorded its end (or as it is after a while)."""
        deadline = time.monotonic() + FINAL_WAIT_S
        job = self.queue.get(job_id)
        while job.state not in FINAL and time.monotonic() < deadline:
            self.wake()
            await asyncio.sleep(0.1)
            job = self.queue.get(job_id)
        return job


class _LineSplitter:
    """Cuts a stream of text into lines for ``send``, counting the characters taken."""

    def __init__(self, send: Callable[[JobLogItem], None]) -> None:
        self.send = send
        self.chars = 0
        self.partial = ""

    def feed(self, text: str) -> None:
        self.chars += len(text)
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.send(JobLogItem(line=line))

    def flush(self) -> None:
        if self.partial:
            self.send(JobLogItem(line=self.partial))
            self.partial = ""
