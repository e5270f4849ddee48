"""The job scheduler's work against Ray: one poll follows the jobs Ray runs and fills the free
slots with queued ones (:class:`JobRunner`); :mod:`.job_service` runs the polls.

Every method here blocks (HTTP to Ray's dashboard, SQLite writes): the service calls them in
a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..adapters import ray_jobs
from ..adapters.ray_jobs import RayJobInfo, RayJobNotFound, RayJobRejected, RayJobs, RayJobsError
from . import storage_layout
from .job_service_packages import PackageKeeper
from .jobs_logs import log_tail, summarize_failure
from .jobs_queue import JobQueue
from .jobs_records import (
    ACTIVE,
    CANCELLED,
    FAILED,
    LOST,
    QUEUED,
    RUNNING,
    SUBMITTED,
    SUCCEEDED,
    Job,
    JobSpec,
)

log = logging.getLogger("lanray.jobs")

LOST_REASON = (
    "Ray no longer knows this job: the cluster's head restarted (or it was deleted in Ray)"
)


class JobRunner:
    """Moves the queue's jobs through their states against Ray's Jobs API.

    ``ready`` says when Ray can take jobs, ``closed`` when the service is shutting down;
    ``python_dir`` goes first on a job's PATH, so that ``python`` is the Python that runs Ray.
    The ids in :attr:`cancelling` are being cancelled by hand (their stop reads "cancelled").
    """

    def __init__(
        self,
        queue: JobQueue,
        packages: PackageKeeper,
        *,
        max_running: int,
        python_dir: Path,
        ready: Callable[[], bool],
        closed: Callable[[], bool],
    ) -> None:
        self.queue = queue
        self.packages = packages
        self.max_running = max_running
        self.python_dir = python_dir
        self.ready = ready
        self.closed = closed
        self.cancelling: set[str] = set()
        self.storage = ""  # the cluster storage's URI, once the host serves it

    def tick(self, api: RayJobs) -> bool:
        """One poll: follow the jobs in Ray, then fill the free slots. True while a job
        waits for Ray to start it (the next poll comes sooner)."""
        for running in self.queue.active():
            self.track(api, running)
        active = self.queue.active()
        # readiness again per launch: the cluster may have gone down since the loop looked
        while len(active) < self.max_running and not self.closed() and self.ready():
            job = self.queue.next_queued()
            if job is None:
                break
            self.launch(api, job)
            after = self.queue.find(job.id)
            if after is not None and after.state == QUEUED:
                break  # Ray could not take it now: try again on the next poll
            active = self.queue.active()
        return any(j.state == SUBMITTED for j in active)

    def track(self, api: RayJobs, job: Job) -> None:
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
            self.finish(api, job, info)

    def finish(self, api: RayJobs, job: Job, info: RayJobInfo) -> Job | None:
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
            changes["message"] = "cancelled" if job.id in self.cancelling else "stopped in Ray"
        else:
            state = FAILED
            changes["message"] = summarize_failure(info.message, logs)
        done = self.queue.transition(job.id, ACTIVE, state, **changes)
        if done is not None:
            log.info("job %s %s%s", job.id, state, f": {done.message}" if done.message else "")
        return done

    def launch(self, api: RayJobs, job: Job) -> None:
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
                    self.track(api, moved)
                return
        if not self.packages.ensure(api, job):
            return
        ray_id = f"lanray-{job.id}-{job.attempt}-{secrets.token_hex(2)}"
        if not self.queue.update(job.id, [QUEUED], ray_id=ray_id):
            return  # cancelled meanwhile
        spec = job.spec
        try:
            api.submit(
                ray_id,
                spec.entrypoint(),
                runtime_env=self.runtime_env(spec, job.id),
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

    def runtime_env(self, spec: JobSpec, job_id: str = "") -> dict[str, Any]:
        env = dict(spec.env)
        if self.storage and job_id:  # where the job's results go (the job's own env wins)
            env.setdefault(storage_layout.ENV_STORAGE, self.storage)
            env.setdefault(storage_layout.ENV_OUTPUT, storage_layout.job_uri(self.storage, job_id))
        if "PATH" not in env:
            env["PATH"] = f"{self.python_dir}{os.pathsep}${{PATH}}"
        out: dict[str, Any] = {"env_vars": env}
        if spec.working_dir:
            out["working_dir"] = spec.working_dir
        return out
