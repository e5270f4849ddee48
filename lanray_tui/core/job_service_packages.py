"""A copy of each uploaded ``working_dir``, kept by the host agent's job service.

Ray drops an upload it no longer uses (and loses all of them when the head restarts), so a
job that waits in the queue could find its code gone. :class:`PackageKeeper` fetches a copy of
each package a queued, running or recently ended job names into ``packages_dir``, uploads it
again when Ray lost it, and removes copies no job needs any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..adapters import ray_jobs
from ..adapters.ray_jobs import RayJobs, RayJobsError
from .errors import LanrayError
from .jobs_queue import JobQueue
from .jobs_records import FAILED, FINAL, QUEUED, Job, JobError

log = logging.getLogger("lanray.jobs")

ARCHIVE_POLL_S = 2.0  # how often copies of new packages are made
COLLECT_EVERY_S = 600.0  # how often copies no job needs are removed
FETCH_RETRY_S = 60.0  # how soon a package that could not be fetched is tried again
KEEP_PACKAGE_S = 24 * 3600.0  # copies of packages outlive their job's end by this much
# Ray names an uploaded working_dir after its content hash: gcs://_ray_pkg_<hex>.zip. The name
# becomes a file in packages_dir, so nothing else (a '/', '..', an absolute path) is accepted.
_PACKAGE_NAME = re.compile(r"_ray_pkg_[0-9a-f]{1,64}\.zip")


class PackageKeeper:
    """Copies of the packages the queue's jobs use, in ``packages_dir``.

    ``api`` makes a client of the cluster's current Jobs API; ``gcs_address``, ``token`` and
    ``tls_env`` (Ray's TLS settings) reach Ray's GCS to fetch a package; ``ready`` says when
    the cluster can be asked; ``closed`` when the service is shutting down.
    """

    def __init__(
        self,
        queue: JobQueue,
        packages_dir: Path,
        *,
        api: Callable[[], RayJobs],
        gcs_address: Callable[[], str],
        token: Callable[[], str],
        tls_env: Callable[[], Mapping[str, str]],
        ready: Callable[[], bool],
        closed: Callable[[], bool],
    ) -> None:
        self.queue = queue
        self.packages_dir = packages_dir
        self.api = api
        self.gcs_address = gcs_address
        self.token = token
        self.tls_env = tls_env
        self.ready = ready
        self.closed = closed
        self._wake: asyncio.Event | None = None
        self._fetch_failed: dict[str, float] = {}

    def start(self) -> asyncio.Task[None]:
        """The task that keeps the copies (until it is cancelled)."""
        self._wake = asyncio.Event()
        return asyncio.create_task(self._loop(), name="jobs-archiver")

    def wake(self) -> None:
        """Look for new packages now (a job was just submitted)."""
        if self._wake is not None:
            self._wake.set()

    def copy_path(self, uri: str) -> Path:
        """Where the copy of a ``gcs://`` package is kept; raises :class:`JobError` for a URI
        that is not Ray's own ``gcs://_ray_pkg_<hex>.zip`` form."""
        return self.packages_dir / package_file_name(uri)

    def ensure(self, api: RayJobs, job: Job) -> bool:
        """Make sure Ray holds the job's working_dir (uploading the kept copy if it lost
        it); otherwise the job fails with the reason."""
        uri = job.spec.working_dir
        if not uri.startswith("gcs://"):
            return True
        try:
            copy = self.copy_path(uri)
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

    def held(self, uri: str) -> bool:
        """Whether a job sent with ``uri`` would find its package: the host keeps a copy, or
        Ray holds it (asking also keeps it there 10 more minutes). False when it cannot
        tell: the submitter then uploads again, which says what is wrong."""
        return self._has(uri, unknown=False)

    def available(self, uri: str) -> bool:
        """Whether a retried job's package can still be had (a copy, or Ray still holds it);
        True when it cannot tell now: the scheduler decides when it runs the job."""
        return self._has(uri, unknown=True)

    def _has(self, uri: str, unknown: bool) -> bool:
        if not is_package_uri(uri):
            return False
        if self.copy_path(uri).is_file():
            return True
        try:
            return self.api().package_exists(uri)
        except RayJobsError:
            return unknown

    async def _loop(self) -> None:
        assert self._wake is not None
        last_gc = 0.0
        while not self.closed():
            if self.ready():
                try:
                    await asyncio.to_thread(self.archive_once)
                    if time.monotonic() - last_gc > COLLECT_EVERY_S:
                        await asyncio.to_thread(self.collect_copies)
                        last_gc = time.monotonic()
                except Exception as exc:
                    if self.closed():
                        return
                    log.warning("keeping copies of job packages: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), ARCHIVE_POLL_S)
            self._wake.clear()

    def wanted(self) -> set[str]:
        """The packages of jobs that have not ended, or ended less than a day ago."""
        now = time.time()
        return {
            j.spec.working_dir
            for j in self.queue.jobs()
            if is_package_uri(j.spec.working_dir)
            and (j.state not in FINAL or (j.ended or now) > now - KEEP_PACKAGE_S)
        }

    def archive_once(self) -> None:
        for uri in sorted(self.wanted()):
            copy = self.copy_path(uri)
            failed = self._fetch_failed.get(uri, -1e9)
            if copy.is_file() or time.monotonic() - failed < FETCH_RETRY_S:
                continue
            try:
                tls = self.tls_env()
                ray_jobs.fetch_package(self.gcs_address(), self.token(), tls, uri, copy)
                log.info("kept a copy of %s", uri)
            except LanrayError as exc:  # RayJobsError, or no certificate
                self._fetch_failed[uri] = time.monotonic()
                log.warning("%s", exc)

    def collect_copies(self) -> None:
        if not self.packages_dir.is_dir():
            return
        keep = {package_file_name(u) for u in self.wanted()}
        for f in self.packages_dir.iterdir():
            if f.name not in keep and f.suffix == ".zip":
                with contextlib.suppress(OSError):
                    f.unlink()


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


def is_package_uri(uri: str) -> bool:
    """Whether ``uri`` is a package Ray made (see :func:`package_file_name`)."""
    try:
        package_file_name(uri)
    except JobError:
        return False
    return True
