"""The job queue's scheduler on the host agent, and its control ops.

:class:`JobService` keeps the queue (:mod:`.jobs`) in SQLite next to the cluster's
credentials and moves jobs through their states against Ray's Jobs API: it hands the next
queued job to Ray whenever the cluster is ready and a slot is free (``max_running``), follows
the jobs Ray runs, stops them on ``cancel``, and keeps a copy of each uploaded ``working_dir``
so that a queued job still runs after the head restarted.

The scheduler is one asyncio task whose polls never overlap (every ~0.5 s, faster while a
job waits for Ray to start it); all blocking work (HTTP, SQLite writes from the poll) runs in
a thread. The agent merges :attr:`JobService.handlers` and :attr:`JobService.streams` into its
control API.

The service is wired here from three parts:

- :mod:`.job_service_runner`: one poll's work against Ray (:class:`JobRunner`);
- :mod:`.job_service_packages`: the kept copies of uploads (:class:`PackageKeeper`,
  :func:`package_file_name`);
- :mod:`.job_service_logs`: the ``job_logs`` stream (:class:`JobLogStream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..adapters import ray_jobs
from ..adapters.ray_jobs import RayJobNotFound, RayJobs, RayJobsError
from . import protocol as p
from . import ray_tls
from .errors import LanrayError
from .job_service_logs import FINAL_WAIT_S, TAIL_RETRY_S, JobLogStream
from .job_service_packages import (
    ARCHIVE_POLL_S,
    KEEP_PACKAGE_S,
    PackageKeeper,
    is_package_uri,
    package_file_name,
)
from .job_service_runner import LOST_REASON, JobRunner
from .jobs import ACTIVE, CANCELLED, FINAL, QUEUED, RETRYABLE, Job, JobError, JobQueue, JobSpec

__all__ = [
    "ARCHIVE_POLL_S",
    "FAST_POLL_S",
    "FINAL_WAIT_S",
    "KEEP_PACKAGE_S",
    "LOST_REASON",
    "POLL_S",
    "STOP_WAIT_S",
    "TAIL_RETRY_S",
    "Handler",
    "JobService",
    "StreamHandler",
    "is_package_uri",
    "package_file_name",
]

log = logging.getLogger("lanray.jobs")

# A handler takes its typed request (or the request's JSON, read here with the protocol's
# from_json) and returns the reply's JSON; a stream handler writes protocol lines.
Handler = Callable[[Any], Awaitable[Any]]
StreamHandler = Callable[[Any, asyncio.StreamWriter], Awaitable[None]]
R = TypeVar("R", bound="p.Request[Any]")

POLL_S = 0.5  # how often the scheduler looks at Ray
FAST_POLL_S = 0.1  # ... while a job waits for Ray to start it
STOP_WAIT_S = 15.0  # how long cancel waits for Ray to confirm a stop


class JobService:
    """The cluster's job queue, run by the host agent.

    ``dashboard_url`` and ``token`` are callables so that the service always uses the
    cluster's current head and secret; ``cluster_ready`` says when Ray can take jobs.
    """

    def __init__(
        self,
        db_path: Path,
        dashboard_url: Callable[[], str],
        token: Callable[[], str],
        max_running: int,
        cluster_ready: Callable[[], bool],
        *,
        gcs_address: Callable[[], str] | None = None,
        tls_env: Callable[[], Mapping[str, str]] | None = None,
        python_dir: Path | None = None,
        poll_s: float = POLL_S,
        ends_at: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.ends_at = ends_at  # the cluster's end (host --expires), Unix time; 0: none
        self.queue = JobQueue(db_path)
        self.packages_dir = db_path.parent / "job-packages"  # mode 0700, like the data dir
        self.dashboard_url = dashboard_url
        self.token = token
        self.max_running = max(1, int(max_running))
        self.cluster_ready = cluster_ready
        self.gcs_address = gcs_address or self._gcs_from_dashboard
        # Ray's TLS settings for its GCS: by default the node's, next to the queue in the
        # data dir (Paths.tls_dir)
        tls_dir = db_path.parent / "tls"
        self.tls_env = tls_env or (lambda: ray_tls.ray_env(tls_dir))
        # `python` in a job means the Python that runs Ray here, not whatever PATH finds.
        self.python_dir = python_dir or Path(sys.executable).parent
        self.poll_s = poll_s
        self.packages = PackageKeeper(
            self.queue,
            self.packages_dir,
            api=self._api,
            gcs_address=lambda: self.gcs_address(),
            token=lambda: self.token(),
            tls_env=self.tls_env,
            ready=self._ready,
            closed=lambda: self._closed,
        )
        self.runner = JobRunner(
            self.queue,
            self.packages,
            max_running=self.max_running,
            python_dir=self.python_dir,
            ready=self._ready,
            closed=lambda: self._closed,
        )
        self.job_logs = JobLogStream(self.queue, self._api, self.wake)
        self.handlers: dict[str, Handler] = {
            "submit": self._op_submit,
            "metrics": self._op_metrics,
            "package": self._op_package,
            "jobs": self._op_jobs,
            "job": self._op_job,
            "cancel": self._op_cancel,
            "retry": self._op_retry,
        }
        self.streams: dict[str, StreamHandler] = {"job_logs": self._stream_job_logs}
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_error = ""
        self._closed = False

    # ----- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the scheduler. Jobs that a previous agent left SUBMITTED or RUNNING are
        checked against Ray on its first poll once the cluster is ready: still known, they
        are followed on; gone (the head restarted), they become LOST with the reason."""
        self._wake = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._schedule_loop(), name="jobs-scheduler"),
            self.packages.start(),
        ]
        counts = self.queue.counts()
        if counts:
            log.info(
                "job queue %s: %s",
                self.queue.path,
                ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())),
            )

    def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self.queue.close()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _api(self) -> RayJobs:
        return RayJobs(self.dashboard_url(), self.token())

    def _gcs_from_dashboard(self) -> str:
        host = urlsplit(self.dashboard_url()).hostname or "127.0.0.1"
        return f"{host}:6379"

    # ----- the scheduler ------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        assert self._wake is not None
        while not self._closed:
            busy = False
            if self._ready():
                try:
                    busy = await asyncio.to_thread(self._tick)
                    self._last_error = ""
                except RayJobsError as exc:
                    self._note_error(str(exc))
                except Exception as exc:  # the scheduler must outlive any one bad poll
                    if self._closed:
                        return
                    log.exception("job scheduler poll failed")
                    self._note_error(f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FAST_POLL_S if busy else self.poll_s)
            self._wake.clear()

    def _ready(self) -> bool:
        try:
            return bool(self.cluster_ready())
        except Exception:
            return False

    def _note_error(self, msg: str) -> None:
        if msg != self._last_error:
            log.warning("job scheduler: %s", msg)
        self._last_error = msg

    def _tick(self) -> bool:
        """One poll (in a thread): see :meth:`JobRunner.tick`."""
        return self.runner.tick(self._api())

    # ----- control ops --------------------------------------------------------------------

    async def _op_submit(self, req: p.SubmitRequest | Mapping[str, Any]) -> Any:
        req = _typed(p.SubmitRequest, req)
        spec = req.spec
        self._refuse_past_the_end(spec)
        job = self.queue.add(spec, submitter=req.submitter)
        log.info("job %s queued: %s (by %s)", job.id, spec.entrypoint(), job.submitter or "?")
        self.wake()
        if spec.working_dir.startswith("gcs://"):
            self.packages.wake()  # keep a copy of its upload at once
        return job.view().to_json()

    async def _op_package(self, req: p.PackageRequest | Mapping[str, Any]) -> Any:
        uri = _typed(p.PackageRequest, req).uri
        return p.HeldReply(await asyncio.to_thread(self.packages.held, uri)).to_json()

    def _refuse_past_the_end(self, spec: JobSpec) -> None:
        """A job that declares it runs longer than the cluster has left is refused."""
        ends = self.ends_at()
        if not ends or spec.max_time_s is None:
            return
        left = ends - time.time()
        if spec.max_time_s > left:
            from .lend_time import ends_line

            raise LanrayError(
                f"{ends_line(ends)}: no time for a job of --max-time "
                f"{int(spec.max_time_s) // 60} min"
            )

    async def _op_metrics(self, req: p.MetricsRequest | Mapping[str, Any]) -> Any:
        """A job's metrics from Ray's result files: its output folder in the cluster storage,
        and the experiments under ``~/ray_results`` here (the driver's node) written while
        it ran."""
        req = _typed(p.MetricsRequest, req)
        if req.mode not in ("", "min", "max"):
            raise LanrayError("metrics: --mode is min or max")
        job = self.queue.get(req.id)
        from . import ray_results

        since = job.started or job.created
        until = job.ended
        roots = [
            (self.results_dir(job.id), 0.0, None),
            (Path.home() / "ray_results", since, until),
        ]
        trials = await asyncio.to_thread(ray_results.collect, roots)
        chosen = ray_results.best(trials, req.metric or None, req.mode or None)
        best = dict(zip(("trial", "metric", "mode"), chosen, strict=True)) if chosen else None
        return p.MetricsReply({t.name: t.series for t in trials}, best).to_json()

    def results_dir(self, job_id: str) -> Path:
        """The job's output folder in the cluster storage (the host serves data_dir/storage)."""
        from .storage_layout import job_path

        return self.packages_dir.parent / "storage" / job_path(job_id)

    async def _op_jobs(self, req: p.JobsRequest | Mapping[str, Any]) -> Any:
        _typed(p.JobsRequest, req)
        return p.JobsReply(
            jobs=[j.view() for j in self.queue.jobs()],
            max_running=self.max_running,
            cluster_ready=self._ready(),
            scheduler_error=self._last_error,
        ).to_json()

    async def _op_job(self, req: p.JobRequest | Mapping[str, Any]) -> Any:
        return self.queue.get(_typed(p.JobRequest, req).id).view(detail=True).to_json()

    async def _op_retry(self, req: p.RetryRequest | Mapping[str, Any]) -> Any:
        job = self.queue.get(_typed(p.RetryRequest, req).id)
        if job.state not in RETRYABLE:
            raise JobError(
                f"job {job.id} is {job.state}: only failed, lost or cancelled jobs can be retried"
            )
        uri = job.spec.working_dir
        if uri.startswith("gcs://"):
            package_file_name(uri)  # a bad name fails again: say why at once
        if uri.startswith("gcs://") and not await asyncio.to_thread(self.packages.available, uri):
            raise JobError(
                f"the working_dir of job {job.id} is no longer kept (Ray drops unused uploads "
                "after 10 minutes): submit it again"
            )
        job = self.queue.retry(job.id)
        log.info("job %s queued again (attempt %d)", job.id, job.attempt)
        self.wake()
        return job.view().to_json()

    async def _op_cancel(self, req: p.CancelRequest | Mapping[str, Any]) -> Any:
        job = self.queue.get(_typed(p.CancelRequest, req).id)
        if job.state == QUEUED:
            moved = self.queue.transition(
                job.id, [QUEUED], CANCELLED, ended=time.time(), message="cancelled while queued"
            )
            if moved is not None:
                log.info("job %s cancelled while queued", job.id)
                return p.CancelReply(moved.view(), changed=True).to_json()
            job = self.queue.get(job.id)
        if job.state in FINAL:
            return p.CancelReply(job.view(), changed=False).to_json()
        self.runner.cancelling.add(job.id)
        try:
            done = await asyncio.to_thread(self._stop, job)
        finally:
            self.runner.cancelling.discard(job.id)
        self.wake()
        return p.CancelReply(done.view(), changed=done.state == CANCELLED).to_json()

    def _stop(self, job: Job) -> Job:
        """Stop a job in Ray and wait (a little) for Ray to confirm it."""
        api = self._api()
        try:
            api.stop(job.ray_id)
        except RayJobNotFound:
            self.queue.transition(
                job.id, ACTIVE, CANCELLED, ended=time.time(), message="cancelled (Ray had lost it)"
            )
            return self.queue.get(job.id)
        except RayJobsError as exc:
            raise JobError(f"could not stop job {job.id} in Ray: {exc}") from None
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            current = self.queue.get(job.id)
            if current.state in FINAL:
                return current  # the scheduler saw it end first
            try:
                info = api.info(job.ray_id)
            except RayJobsError:
                break
            if info.status in ray_jobs.TERMINAL:
                self.runner.finish(api, current, info)
                return self.queue.get(job.id)
            time.sleep(0.2)
        self.queue.transition(
            job.id,
            ACTIVE,
            CANCELLED,
            ended=time.time(),
            message="cancelled (Ray had not confirmed the stop yet)",
        )
        return self.queue.get(job.id)

    # ----- the log stream -----------------------------------------------------------------

    async def _stream_job_logs(
        self, req: p.JobLogsRequest | Mapping[str, Any], writer: asyncio.StreamWriter
    ) -> None:
        """Stream a job's log: ``{"job": {...}}`` first and last (and on each state change),
        ``{"line": ...}`` per log line. With ``follow``, waits for a queued job to start and
        follows it until it ends; otherwise sends the log as it is now."""
        try:
            await self.job_logs.run(_typed(p.JobLogsRequest, req), writer)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except LanrayError as exc:
            writer.write(p.error_line(str(exc)))
            return
        except Exception as exc:
            log.exception("job_logs failed")
            writer.write(p.error_line(f"job_logs failed: {exc}"))
            return
        writer.write(p.END_LINE)


def _typed(cls: type[R], req: R | Mapping[str, Any]) -> R:
    """``req`` as its typed request: the agent passes one it parsed; the request's JSON (as
    an agent that does not parse yet passes it) is read here with the same checks."""
    if isinstance(req, cls):
        return req
    if not isinstance(req, Mapping):
        raise p.ProtocolError(f"bad request: '{cls.OP}' must be a JSON object")
    return cls.from_json({**req, "op": cls.OP})
