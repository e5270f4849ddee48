"""Ray's Jobs API, with the cluster token: submit, status, stop, logs, log tail, packages.

The host agent talks to the Jobs REST API, on the head's loopback, with plain urllib (and
aiohttp for the log tail's websocket), so it never imports ``ray``. Uploading a
``working_dir`` from any node, asking whether the cluster still holds a package and keeping
a copy of one go to the GCS over Ray's own gRPC (mutual TLS and the token), in a child
process that loads Ray and uses Ray's own packaging, so that the caller never loads Ray.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.types import LanrayError
from . import ray_process

# Ray's job states (JobStatus)
PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED = (
    "PENDING",
    "RUNNING",
    "STOPPED",
    "SUCCEEDED",
    "FAILED",
)
TERMINAL = frozenset({STOPPED, SUCCEEDED, FAILED})


class RayJobsError(LanrayError):
    """Ray's Jobs API could not be asked (unreachable, refused the token...): try later."""


class RayJobRejected(RayJobsError):
    """Ray answered, and said no (a bad request, an unknown runtime env...)."""


class RayJobNotFound(RayJobRejected):
    """Ray does not know this job (or package)."""


@dataclass(frozen=True)
class RayJobInfo:
    """What Ray says about one submission."""

    status: str
    message: str = ""
    exit_code: int | None = None
    start_time: float | None = None  # seconds
    end_time: float | None = None
    driver_node_id: str = ""
    driver_ip: str = ""  # the address of the node the driver runs on (once it calls Ray)

    @property
    def node(self) -> str:
        """Where the job runs: its driver's address, else the Ray node id of its supervisor."""
        return self.driver_ip or self.driver_node_id

    @classmethod
    def from_ray(cls, doc: dict[str, Any]) -> RayJobInfo:
        def secs(v: Any) -> float | None:
            return float(v) / 1000.0 if isinstance(v, (int, float)) and v else None

        code = doc.get("driver_exit_code")
        return cls(
            status=str(doc.get("status", "")),
            message=str(doc.get("message") or ""),
            exit_code=int(code) if isinstance(code, int) else None,
            start_time=secs(doc.get("start_time")),
            end_time=secs(doc.get("end_time")),
            driver_node_id=str(doc.get("driver_node_id") or ""),
            driver_ip=str((doc.get("driver_info") or {}).get("node_ip_address") or ""),
        )


def _short(text: str, limit: int = 300) -> str:
    """The line of an error body that says most: Ray often sends a whole traceback."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    flat = " ".join(line.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class RayJobs:
    """A blocking client of one cluster's Jobs API (the agent calls it from threads)."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(
        self, method: str, path: str, body: Any = None, data: bytes | None = None
    ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            if exc.code in (401, 403):
                raise RayJobsError(
                    f"the Ray Jobs API refused the token (HTTP {exc.code})"
                ) from None
            if exc.code == 404:
                raise RayJobNotFound(_short(text) or f"not found: {path}") from None
            if exc.code >= 500:
                raise RayJobsError(
                    f"the Ray Jobs API failed (HTTP {exc.code}): {_short(text)}"
                ) from None
            raise RayJobRejected(_short(text) or f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RayJobsError(
                f"cannot reach Ray's Jobs API at {self.base_url}: {reason}"
            ) from None

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        _, raw = self._request(method, path, body)
        try:
            return json.loads(raw)
        except ValueError:
            raise RayJobsError(f"Ray's Jobs API sent something that is not JSON ({path})") from None

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
    ) -> str:
        """Hand a job to Ray; returns its submission id. :class:`RayJobRejected` when Ray
        refuses it (the job cannot run), :class:`RayJobsError` when it may work later."""
        body: dict[str, Any] = {"entrypoint": entrypoint, "submission_id": submission_id}
        if runtime_env:
            body["runtime_env"] = runtime_env
        if metadata:
            body["metadata"] = metadata
        if num_cpus is not None:
            body["entrypoint_num_cpus"] = num_cpus
        if num_gpus is not None:
            body["entrypoint_num_gpus"] = num_gpus
        doc = self._json("POST", "/api/jobs/", body)
        return str(doc.get("submission_id") or submission_id)

    def info(self, submission_id: str) -> RayJobInfo:
        doc = self._json("GET", f"/api/jobs/{_q(submission_id)}")
        if not isinstance(doc, dict):
            raise RayJobsError("Ray's Jobs API sent a job of an unexpected shape")
        return RayJobInfo.from_ray(doc)

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop a job; True if it was running."""
        doc = self._json("POST", f"/api/jobs/{_q(submission_id)}/stop")
        return bool(doc.get("stopped")) if isinstance(doc, dict) else False

    def logs(self, submission_id: str) -> str:
        doc = self._json("GET", f"/api/jobs/{_q(submission_id)}/logs")
        return str(doc.get("logs") or "") if isinstance(doc, dict) else ""

    def package_exists(self, uri: str) -> bool:
        """Whether Ray still holds an uploaded package (asking also keeps it 10 more minutes)."""
        try:
            self._request("GET", _package_path(uri))
            return True
        except RayJobNotFound:
            return False

    def put_package(self, uri: str, data: bytes) -> None:
        """Upload a package again under its URI (a copy kept by the agent)."""
        self._request("PUT", _package_path(uri), data=data)

    async def tail(self, submission_id: str) -> AsyncIterator[str]:
        """Follow a job's log through Ray's websocket: chunks of text, from the start of the
        log, until the job ends. Raises :class:`RayJobsError` if it cannot follow."""
        import aiohttp

        url = f"{self.base_url}/api/jobs/{_q(submission_id)}/logs/tail"
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with (
                aiohttp.ClientSession(headers=headers) as session,
                session.ws_connect(url, heartbeat=30.0) as ws,
            ):
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        yield str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.ERROR:
                        raise RayJobsError(f"the log tail of {submission_id} broke")
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:
                raise RayJobNotFound(f"Ray does not know job {submission_id}") from None
            raise RayJobsError(
                f"cannot follow the log of {submission_id} (HTTP {exc.status})"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RayJobsError(f"cannot follow the log of {submission_id}: {exc}") from None


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _package_path(uri: str) -> str:
    protocol, sep, name = uri.partition("://")
    if not sep or not name or "/" in name:
        raise RayJobRejected(f"'{uri}' is not a package URI")
    return f"/api/packages/{_q(protocol)}/{_q(name)}"


def package_name(uri: str) -> str:
    """The file name of a ``gcs://`` package (``_ray_pkg_<hash>.zip``)."""
    return uri.partition("://")[2]


# ----- Ray's GCS in a child process: uploads (the CLI) and copies (the host agent) ---------
#
# The GCS is Ray's gRPC port on the head (mutual TLS, token): any node of the cluster reaches
# it, unlike the Jobs API, which listens on the head's loopback. The child loads Ray, so that
# the caller never does.

UPLOAD_TIMEOUT_S = 300.0


def _gcs_child(
    args: list[str], token: str, tls_env: Mapping[str, str], timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", __name__, *args]
    env = ray_process.auth_env(token, tls_env)
    try:
        return subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RayJobsError(f"{what}: the cluster's GCS did not answer in {timeout:.0f} s") from None
    except OSError as exc:
        raise RayJobsError(f"{what}: {exc}") from None


def _child_error(p: subprocess.CompletedProcess[str]) -> str:
    return _short(p.stderr or p.stdout) or f"exit code {p.returncode}"


def upload_working_dir(
    gcs_address: str,
    token: str,
    tls_env: Mapping[str, str],
    path: Path,
    timeout: float = UPLOAD_TIMEOUT_S,
) -> str:
    """Zip ``path`` the way Ray does (``.gitignore`` and ``.rayignore`` respected), put it
    into the cluster's GCS over Ray's own gRPC unless it is there already, and return its
    ``gcs://...zip`` URI (the name Ray's packaging gives that content)."""
    if not path.is_dir():
        raise LanrayError(f"working dir '{path}' is not a directory")
    what = f"could not upload '{path}'"
    p = _gcs_child(["upload", gcs_address, str(path.resolve())], token, tls_env, timeout, what)
    uri = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0:
        raise RayJobsError(f"{what}: {_child_error(p)}")
    if not uri.startswith("gcs://"):
        raise RayJobsError(f"Ray did not return a package URI for '{path}'")
    return uri


def fetch_package(
    gcs_address: str,
    token: str,
    tls_env: Mapping[str, str],
    uri: str,
    dest: Path,
    timeout: float = 60.0,
) -> None:
    """Copy an uploaded package out of the GCS into ``dest``. Raises :class:`RayJobsError`
    with the reason."""
    _package_path(uri)  # a package URI, or RayJobRejected
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    what = f"could not copy {uri} out of the cluster"
    p = _gcs_child(["fetch-package", gcs_address, uri, str(tmp)], token, tls_env, timeout, what)
    if p.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RayJobsError(f"{what}: {_child_error(p)}")
    os.replace(tmp, dest)


# ----- the child's side ----------------------------------------------------------------------


def _gcs(gcs_address: str) -> Any:
    """A GCS client, also behind Ray's ``_internal_kv_*`` that its packaging uses."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]
    from ray.experimental import internal_kv

    for name in ("ray._private.runtime_env.packaging",):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = GcsClient(address=gcs_address)
    internal_kv._initialize_internal_kv(client)
    return client


def _upload_main(gcs_address: str, directory: str) -> int:
    from ray._private.ray_constants import RAY_RUNTIME_ENV_IGNORE_GITIGNORE
    from ray._private.runtime_env import packaging

    # what Ray's job client does: respect .gitignore unless told not to
    include_gitignore = os.environ.get(RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1"
    uri = packaging.get_uri_for_directory(directory, include_gitignore)
    _gcs(gcs_address)
    with tempfile.TemporaryDirectory(prefix="lanray-upload-") as tmp:
        packaging.upload_package_if_needed(uri, tmp, directory, include_gitignore)
    print(uri, flush=True)
    return 0


def _fetch_main(gcs_address: str, uri: str, out: str) -> int:
    data = _gcs(gcs_address).internal_kv_get(uri.encode(), None)
    if data is None:
        print(f"the cluster does not hold {uri}", file=sys.stderr)
        return 1
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return 0


def _main(argv: list[str]) -> int:
    commands: dict[str, tuple[int, Any]] = {
        "upload": (2, _upload_main),
        "fetch-package": (3, _fetch_main),
    }
    if not argv or argv[0] not in commands or len(argv) - 1 != commands[argv[0]][0]:
        print(
            "usage: python -m lanray_tui.adapters.ray_jobs "
            "upload GCS DIR | fetch-package GCS URI OUT",
            file=sys.stderr,
        )
        return 2
    try:
        return int(commands[argv[0]][1](*argv[1:]))
    except Exception as exc:  # Ray's errors: one line for the parent
        text = str(exc)
        if "waiting for GCS to become available" in text:
            text = f"cannot reach the cluster's GCS at {argv[1]} ({_short(text)})"
        print(_short(text) or type(exc).__name__, file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
