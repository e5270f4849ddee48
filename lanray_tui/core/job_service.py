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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..adapters import ray_jobs
from ..adapters.ray_jobs import RayJobInfo, RayJobNotFound, RayJobRejected, RayJobs, RayJobsError
from . import protocol as p
from .errors import LanrayError
from .jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    FINAL,
    LOST,
    QUEUED,
    RETRYABLE,
    RUNNING,
    SUBMITTED,
    SUCCEEDED,
    Job,
    JobError,
    JobQueue,
    JobSpec,
    log_tail,
    summarize_failure,
)

log = logging.getLogger("lanray.jobs")

# A handler takes its typed request (or the request's JSON, read here with the protocol's
# from_json) and returns the reply's JSON; a stream handler writes protocol lines.
Handler = Callable[[Any], Awaitable[Any]]
StreamHandler = Callable[[Any, asyncio.StreamWriter], Awaitable[None]]
R = TypeVar("R", bound="p.Request[Any]")

POLL_S = 0.5  # how often the scheduler looks at Ray
FAST_POLL_S = 0.1  # ... while a job waits for Ray to start it
ARCHIVE_POLL_S = 2.0  # how often copies of new packages are made
STOP_WAIT_S = 15.0  # how long cancel waits for Ray to confirm a stop
FINAL_WAIT_S = 10.0  # how long a log stream waits for the job's final state
TAIL_RETRY_S = 0.5  # how soon a broken log tail of a running job is opened again
KEEP_PACKAGE_S = 24 * 3600.0  # copies of packages outlive their job's end by this much
# Ray names an uploaded working_dir after its content hash: gcs://_ray_pkg_<hex>.zip. The name
# becomes a file in packages_dir, so nothing else (a '/', '..', an absolute path) is accepted.
_PACKAGE_NAME = re.compile(r"_ray_pkg_[0-9a-f]{1,64}\.zip")
LOST_REASON = (
    "Ray no longer knows this job: the cluster's head restarted (or it was deleted in Ray)"
)


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
        python_dir: Path | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.queue = JobQueue(db_path)
        self.packages_dir = db_path.parent / "job-packages"  # mode 0700, like the data dir
        self.dashboard_url = dashboard_url
        self.token = token
        self.max_running = max(1, int(max_running))
        self.cluster_ready = cluster_ready
        self.gcs_address = gcs_address or self._gcs_from_dashboard
        # `python` in a job means the Python that runs Ray here, not whatever PATH finds.
        self.python_dir = python_dir or Path(sys.executable).parent
        self.poll_s = poll_s
        self.handlers: dict[str, Handler] = {
            "submit": self._op_submit,
            "jobs": self._op_jobs,
            "job": self._op_job,
            "cancel": self._op_cancel,
            "retry": self._op_retry,
        }
        self.streams: dict[str, StreamHandler] = {"job_logs": self._stream_job_logs}
        self._wake: asyncio.Event | None = None
        self._archive_wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._cancelling: set[str] = set()
        self._fetch_failed: dict[str, float] = {}
        self._last_error = ""
        self._closed = False

    # ----- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the scheduler. Jobs that a previous agent left SUBMITTED or RUNNING are
        checked against Ray on its first poll once the cluster is ready: still known, they
        are followed on; gone (the head restarted), they become LOST with the reason."""
        self._wake = asyncio.Event()
        self._archive_wake = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._schedule_loop(), name="jobs-scheduler"),
            asyncio.create_task(self._archive_loop(), name="jobs-archiver"),
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

    def _wake_archiver(self) -> None:
        if self._archive_wake is not None:
            self._archive_wake.set()

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
        """One poll: follow the jobs in Ray, then fill the free slots. True while a job
        waits for Ray to start it (the next poll comes sooner)."""
        api = self._api()
        for running in self.queue.active():
            self._track(api, running)
        active = self.queue.active()
        # readiness again per launch: the cluster may have gone down since the loop looked
        while len(active) < self.max_running and not self._closed and self._ready():
            job = self.queue.next_queued()
            if job is None:
                break
            self._launch(api, job)
            after = self.queue.find(job.id)
            if after is not None and after.state == QUEUED:
                break  # Ray could not take it now: try again on the next poll
            active = self.queue.active()
        return any(j.state == SUBMITTED for j in active)

    def _track(self, api: RayJobs, job: Job) -> None:
        try:
            info = api.info(job.ray_id)
        except RayJobNotFound:
            self.queue.transition(
                job.id, ACTIVE, LOST, ended=time.time(), message=LOST_REASON, exit_code=None
            )
            log.warning("job %s is lost: %s", job.id, LOST_REASON)
            return
        if info.status == ray_jobs.RUNNING and job.state == SUBMITTED:
            self.queue.transition(job.id, [SUBMITTED], RUNNING, started=time.time(), node=info.node)
        elif info.node and info.node != job.node and job.state == RUNNING:
            self.queue.update(job.id, [RUNNING], node=info.node)
        elif info.status in ray_jobs.TERMINAL:
            self._finish(api, job, info)

    def _finish(self, api: RayJobs, job: Job, info: RayJobInfo) -> Job | None:
        """Record how Ray ended a job, with the tail of its log."""
        try:
            logs = api.logs(job.ray_id)
        except RayJobsError:
            logs = ""
        now = time.time()
        changes: dict[str, Any] = {
            "ended": info.end_time or now,
            "exit_code": info.exit_code,
            "log_tail": log_tail(logs),
        }
        if info.node:
            changes["node"] = info.node
        if job.started is None:  # it ended between two polls: Ray's start will do
            changes["started"] = min(info.start_time or job.submitted or now, changes["ended"])
        if info.status == ray_jobs.SUCCEEDED:
            state = SUCCEEDED
            changes["message"] = ""
            if info.exit_code is None:
                changes["exit_code"] = 0
        elif info.status == ray_jobs.STOPPED:
            state = CANCELLED
            changes["message"] = "cancelled" if job.id in self._cancelling else "stopped in Ray"
        else:
            state = FAILED
            changes["message"] = summarize_failure(info.message, logs)
        done = self.queue.transition(job.id, ACTIVE, state, **changes)
        if done is not None:
            log.info("job %s %s%s", job.id, state, f": {done.message}" if done.message else "")
        return done

    def _launch(self, api: RayJobs, job: Job) -> None:
        """Hand a queued job to Ray (or adopt the submission a crashed agent made)."""
        if job.ray_id:
            try:
                info = api.info(job.ray_id)
            except RayJobNotFound:
                info = None
            if info is not None:
                moved = self.queue.transition(
                    job.id, [QUEUED], SUBMITTED, submitted=job.submitted or time.time()
                )
                if moved is not None:
                    log.info("job %s: found its submission %s in Ray", job.id, job.ray_id)
                    self._track(api, moved)
                return
        if not self._ensure_package(api, job):
            return
        ray_id = f"lanray-{job.id}-{job.attempt}-{secrets.token_hex(2)}"
        if not self.queue.update(job.id, [QUEUED], ray_id=ray_id):
            return  # cancelled meanwhile
        spec = job.spec
        try:
            api.submit(
                ray_id,
                spec.entrypoint(),
                runtime_env=self._runtime_env(spec),
                metadata={
                    "lanray_job": job.id,
                    "lanray_name": spec.name,
                    "lanray_submitter": job.submitter,
                },
                num_cpus=spec.num_cpus,
                num_gpus=spec.num_gpus,
            )
        except RayJobRejected as exc:
            self.queue.transition(
                job.id, [QUEUED], FAILED, ended=time.time(), message=f"Ray refused the job: {exc}"
            )
            log.warning("job %s: Ray refused it: %s", job.id, exc)
            return
        except RayJobsError as exc:
            self.queue.update(job.id, [QUEUED], message=f"waiting: {exc}")
            raise
        moved = self.queue.transition(
            job.id, [QUEUED], SUBMITTED, submitted=time.time(), message=""
        )
        if moved is None:  # cancelled while it was being submitted
            with contextlib.suppress(RayJobsError):
                api.stop(ray_id)
            return
        log.info("job %s submitted to Ray as %s", job.id, ray_id)

    def _runtime_env(self, spec: JobSpec) -> dict[str, Any]:
        env = dict(spec.env)
        if "PATH" not in env:
            env["PATH"] = f"{self.python_dir}{os.pathsep}${{PATH}}"
        out: dict[str, Any] = {"env_vars": env}
        if spec.working_dir:
            out["working_dir"] = spec.working_dir
        return out

    # ----- packages: a copy of each uploaded working_dir ---------------------------------

    def _copy_path(self, uri: str) -> Path:
        """Where the copy of a ``gcs://`` package is kept; raises :class:`JobError` for a URI
        that is not Ray's own ``gcs://_ray_pkg_<hex>.zip`` form."""
        return self.packages_dir / package_file_name(uri)

    def _ensure_package(self, api: RayJobs, job: Job) -> bool:
        """Make sure Ray holds the job's working_dir (uploading the kept copy if it lost
        it); otherwise the job fails with the reason."""
        uri = job.spec.working_dir
        if not uri.startswith("gcs://"):
            return True
        try:
            copy = self._copy_path(uri)
        except JobError as exc:
            # Only this job fails: the scheduler goes on with the ones behind it.
            self.queue.transition(job.id, [QUEUED], FAILED, ended=time.time(), message=str(exc))
            log.warning("job %s: %s", job.id, exc)
            return False
        if api.package_exists(uri):
            return True
        if copy.is_file():
            api.put_package(uri, copy.read_bytes())
            log.info("job %s: uploaded its working_dir %s again from the kept copy", job.id, uri)
            return True
        self.queue.transition(
            job.id,
            [QUEUED],
            FAILED,
            ended=time.time(),
            message="its working_dir is no longer in the cluster and no copy was kept "
            "(the head restarted): submit it again",
        )
        return False

    async def _archive_loop(self) -> None:
        assert self._archive_wake is not None
        last_gc = 0.0
        while not self._closed:
            if self._ready():
                try:
                    await asyncio.to_thread(self._archive_once)
                    if time.monotonic() - last_gc > 600:
                        await asyncio.to_thread(self._collect_copies)
                        last_gc = time.monotonic()
                except Exception as exc:
                    if self._closed:
                        return
                    log.warning("keeping copies of job packages: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._archive_wake.wait(), ARCHIVE_POLL_S)
            self._archive_wake.clear()

    def _wanted_packages(self) -> set[str]:
        now = time.time()
        return {
            j.spec.working_dir
            for j in self.queue.jobs()
            if _is_package_uri(j.spec.working_dir)
            and (j.state not in FINAL or (j.ended or now) > now - KEEP_PACKAGE_S)
        }

    def _archive_once(self) -> None:
        for uri in sorted(self._wanted_packages()):
            copy = self._copy_path(uri)
            if copy.is_file() or time.monotonic() - self._fetch_failed.get(uri, -1e9) < 60:
                continue
            try:
                ray_jobs.fetch_package(self.gcs_address(), self.token(), uri, copy)
                log.info("kept a copy of %s", uri)
            except RayJobsError as exc:
                self._fetch_failed[uri] = time.monotonic()
                log.warning("%s", exc)

    def _collect_copies(self) -> None:
        if not self.packages_dir.is_dir():
            return
        keep = {package_file_name(u) for u in self._wanted_packages()}
        for f in self.packages_dir.iterdir():
            if f.name not in keep and f.suffix == ".zip":
                with contextlib.suppress(OSError):
                    f.unlink()

    # ----- control ops --------------------------------------------------------------------

    async def _op_submit(self, req: p.SubmitRequest | Mapping[str, Any]) -> Any:
        req = _typed(p.SubmitRequest, req)
        spec = req.spec
        job = self.queue.add(spec, submitter=req.submitter)
        log.info("job %s queued: %s (by %s)", job.id, spec.entrypoint(), job.submitter or "?")
        self.wake()
        if spec.working_dir.startswith("gcs://"):
            self._wake_archiver()  # keep a copy of its upload at once
        return job.view().to_json()

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
        if uri.startswith("gcs://") and not await asyncio.to_thread(self._package_available, uri):
            raise JobError(
                f"the working_dir of job {job.id} is no longer kept (Ray drops unused uploads "
                "after 10 minutes): submit it again"
            )
        job = self.queue.retry(job.id)
        log.info("job %s queued again (attempt %d)", job.id, job.attempt)
        self.wake()
        return job.view().to_json()

    def _package_available(self, uri: str) -> bool:
        if not _is_package_uri(uri):
            return False
        if self._copy_path(uri).is_file():
            return True
        try:
            return self._api().package_exists(uri)
        except RayJobsError:
            return True  # cannot tell now: the scheduler decides when it runs the job

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
        self._cancelling.add(job.id)
        try:
            done = await asyncio.to_thread(self._stop, job)
        finally:
            self._cancelling.discard(job.id)
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
                self._finish(api, current, info)
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
            await self._send_job_logs(_typed(p.JobLogsRequest, req), writer)
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

    async def _send_job_logs(self, req: p.JobLogsRequest, writer: asyncio.StreamWriter) -> None:
        job = self.queue.get(req.id)
        follow = req.follow

        def send(item: p.JobLogItem) -> None:
            writer.write(p.ok_line(item))

        send(p.JobLogItem(job=job.view()))
        await writer.drain()
        # A queued job has no log yet: wait for Ray to take it.
        last_state, beat = job.state, time.monotonic()
        while follow and (job.state == QUEUED or (job.state in ACTIVE and not job.ray_id)):
            await asyncio.sleep(0.2)
            job = self.queue.get(job.id)
            if job.state != last_state or time.monotonic() - beat > 5:
                send(p.JobLogItem(job=job.view()))
                await writer.drain()  # raises when the client went away
                last_state, beat = job.state, time.monotonic()
        if follow and job.state in ACTIVE:
            await self._follow(job, send, writer)
            job = await self._final_state(job.id)
        elif job.ray_id:
            try:
                text = await asyncio.to_thread(self._api().logs, job.ray_id)
            except RayJobsError:
                text = job.log_tail  # Ray lost it: the tail kept when it ended
            for line in text.splitlines():
                send(p.JobLogItem(line=line))
        send(p.JobLogItem(job=job.view()))
        await writer.drain()

    async def _follow(
        self, job: Job, send: Callable[[p.JobLogItem], None], writer: asyncio.StreamWriter
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
                async for chunk in self._api().tail(job.ray_id):
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
            text = await asyncio.to_thread(self._api().logs, job.ray_id)
        except RayJobsError:
            text = ""
        lines.feed(text[lines.chars :])
        lines.flush()
        await writer.drain()

    async def _runs_in_ray(self, job: Job) -> bool:
        """Whether Ray still runs ``job`` (as the queue last saw it, when Ray cannot say)."""
        try:
            info = await asyncio.to_thread(self._api().info, job.ray_id)
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

    def __init__(self, send: Callable[[p.JobLogItem], None]) -> None:
        self.send = send
        self.chars = 0
        self.partial = ""

    def feed(self, text: str) -> None:
        self.chars += len(text)
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.send(p.JobLogItem(line=line))

    def flush(self) -> None:
        if self.partial:
            self.send(p.JobLogItem(line=self.partial))
            self.partial = ""


def package_file_name(uri: str) -> str:
    """The file name of a ``gcs://`` working_dir package, checked to be Ray's own form
    (``_ray_pkg_<hex>.zip``) so that it stays inside the package folder.

    Raises :class:`JobError` with one line otherwise (an absolute path, ``..``, ``a/b``).
    """
    name = ray_jobs.package_name(uri)
    if not uri.startswith("gcs://") or not _PACKAGE_NAME.fullmatch(name):
        shown = "".join(ch if ch.isprintable() else "?" for ch in uri[:120])
        raise JobError(
            f"its working_dir {shown!r} is not a package Ray made "
            "(gcs://_ray_pkg_<hex>.zip): submit it again"
        )
    return name


def _is_package_uri(uri: str) -> bool:
    try:
        package_file_name(uri)
    except JobError:
        return False
    return True


def _typed(cls: type[R], req: R | Mapping[str, Any]) -> R:
    """``req`` as its typed request: the agent passes one it parsed; the request's JSON (as
    an agent that does not parse yet passes it) is read here with the same checks."""
    if isinstance(req, cls):
        return req
    if not isinstance(req, Mapping):
        raise p.ProtocolError(f"bad request: '{cls.OP}' must be a JSON object")
    return cls.from_json({**req, "op": cls.OP})
