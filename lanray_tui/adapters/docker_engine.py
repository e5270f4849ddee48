"""Docker through the Docker SDK: the only module that imports ``docker``, and only on first
use, so that a machine without Docker pays nothing for it.

Every failure the user can act on becomes one :class:`DockerError` line that says what is
wrong and ends with the way out (``use runtime.kind: native``): the SDK or Docker missing,
the daemon down, no permission on its socket, an image that cannot be pulled, a container
that exits at start.

:class:`DockerRay` is Ray in a container seen as a :class:`~.ray_process.RayHandle`: the
agent polls, waits for and stops it like a child process, and a thread appends the
container's output to the node's Ray log, where the agent looks for Ray's start marker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.types import LanrayError

HINT = "use runtime.kind: native"
DEFAULT_HOST = "unix:///var/run/docker.sock"
START_GRACE_S = 1.0  # a container that dies this soon is a set-up problem: report it at once
API_TIMEOUT_S = 60
PROGRESS_EVERY_S = 1.0

Say = Callable[[str], None]


class DockerError(LanrayError):
    """Docker cannot run Ray here; the one-line message says why and what to do."""


def _fail(what: str, fix: str = "") -> DockerError:
    return DockerError(f"{what}; {fix + ', or ' if fix else ''}{HINT}")


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ----- connecting ---------------------------------------------------------------------------


def docker_host() -> str:
    """Where the daemon is: ``$DOCKER_HOST`` or the standard socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def socket_problem(host: str) -> DockerError | None:
    """Why a ``unix://`` daemon socket cannot be used, or None when it answers a connect."""
    if not host.startswith("unix://"):
        return None  # tcp:// and ssh:// are left to the SDK
    path = host[len("unix://") :]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3.0)
    try:
        s.connect(path)
    except FileNotFoundError:
        if not (shutil.which("dockerd") or shutil.which("docker")):
            return _fail(
                f"Docker is not installed (no docker command, no daemon socket at {path})",
                "install it (apt-get install docker.io)",
            )
        return _fail(
            f"the Docker daemon is not running (no socket at {path})",
            "start it (sudo systemctl start docker)",
        )
    except ConnectionRefusedError:
        return _fail(
            f"the Docker daemon is not running ({path} refuses connections)",
            "start it (sudo systemctl start docker)",
        )
    except PermissionError:
        return _fail(
            f"permission denied on the Docker socket {path}",
            "add this user to the 'docker' group (sudo usermod -aG docker $USER; log in again)",
        )
    except OSError as exc:
        return _fail(f"cannot reach the Docker daemon at {path}: {exc.strerror or exc}")
    finally:
        s.close()
    return None


def connect(timeout: int = API_TIMEOUT_S) -> Engine:
    """A client for the daemon that ``DOCKER_HOST`` (or the standard socket) names."""
    try:
        import docker
    except ImportError:
        raise _fail("the docker Python package is not installed", "pip install docker") from None
    host = docker_host()
    problem = socket_problem(host)
    if problem is not None:
        raise problem
    try:
        client = docker.DockerClient(base_url=host, version="auto", timeout=timeout)
        client.ping()
    except docker.errors.DockerException as exc:
        raise _fail(f"the Docker daemon at {host} does not answer: {_one_line(str(exc))}") from None
    return Engine(client)


# ----- what to run --------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerSpec:
    """One Ray container: ``network`` is ``host`` or the name of a Docker network."""

    name: str
    image: str
    command: Sequence[str]
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    network: str = "host"
    shm_size: int = 1 << 30
    gpu_ids: Sequence[str] = field(default_factory=tuple)
    dns_options: Sequence[str] = field(default_factory=tuple)

    @property
    def host_network(self) -> bool:
        return self.network == "host"


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str  # created, running, exited, ...
    labels: Mapping[str, str]

    @property
    def running(self) -> bool:
        return self.status == "running"


def device_requests(gpu_ids: Sequence[str]) -> list[Any]:
    """Docker's ``--gpus device=...`` for these GPU UUIDs (or indexes); empty: none."""
    if not gpu_ids:
        return []
    from docker.types import DeviceRequest

    return [DeviceRequest(device_ids=list(gpu_ids), capabilities=[["gpu"]])]


def create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """The SDK's ``containers.create`` arguments for ``spec``."""
    from docker.types import LogConfig

    kw: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "name": spec.name,
        "labels": dict(spec.labels),
        "environment": dict(spec.environment),
        "shm_size": spec.shm_size,
        "init": True,  # tini as PID 1: signals reach `ray start`, zombies are reaped
        "detach": True,
        "log_config": LogConfig(type="json-file", config={"max-size": "10m", "max-file": "2"}),
    }
    if spec.host_network:
        kw["network_mode"] = "host"
    else:
        kw["network"] = spec.network
    if spec.dns_options:
        kw["dns_opt"] = list(spec.dns_options)
    requests = device_requests(spec.gpu_ids)
    if requests:
        kw["device_requests"] = requests
    return kw


# ----- the daemon ---------------------------------------------------------------------------


class Engine:
    """The few things the docker runtime asks of the daemon."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def has_nvidia(self) -> bool:
        """Whether containers can get NVIDIA GPUs (the NVIDIA Container Toolkit is set up)."""
        with contextlib.suppress(Exception):
            if "nvidia" in (self.client.info().get("Runtimes") or {}):
                return True
        return bool(shutil.which("nvidia-container-runtime-hook"))

    def network(self, name: str) -> dict[str, Any] | None:
        """The Docker network ``name`` as ``docker network inspect`` shows it; None if none."""
        import docker

        try:
            return dict(self.client.networks.get(name).attrs)
        except docker.errors.NotFound:
            return None

    def has_image(self, image: str) -> bool:
        import docker

        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def pull(self, image: str, say: Say) -> None:
        """Pull ``image``, reporting layers and bytes through ``say`` about once a second."""
        import docker
        from docker.utils import parse_repository_tag

        repo, tag = parse_repository_tag(image)
        layers: dict[str, tuple[str, int, int]] = {}  # id -> (status, current, total)
        last, line = 0.0, ""
        say(f"pulling {image}")
        try:
            for event in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise pull_error(image, str(event["error"]))
                lid, status = event.get("id", ""), str(event.get("status", ""))
                if not lid or status.startswith(("Pulling from", "Digest", "Status")):
                    continue
                detail = event.get("progressDetail") or {}
                _, cur, tot = layers.get(lid, ("", 0, 0))
                if status in ("Downloading", "Extracting") and detail.get("total"):
                    cur, tot = int(detail.get("current", 0)), int(detail["total"])
                    cur = cur if status == "Downloading" else tot
                if status in ("Download complete", "Pull complete", "Already exists"):
                    cur = tot
                layers[lid] = (status, cur, tot)
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S or status == "Pull complete":
                    last, line = now, pull_progress(image, layers)
                    say(line)
        except docker.errors.APIError as exc:
            raise pull_error(image, str(exc.explanation or exc)) from None
        except docker.errors.DockerException as exc:
            raise pull_error(image, str(exc)) from None
        except OSError as exc:  # requests' connection errors are OSErrors
            raise pull_error(image, str(exc)) from None
        if layers and pull_progress(image, layers) != line:
            say(pull_progress(image, layers))
        say(f"pulled {image}")

    def containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) that carry all of ``labels``."""
        found = self.client.containers.list(
            all=True,
            filters={"label": [f"{k}={v}" for k, v in labels.items()]},
            ignore_removed=True,
        )
        return [ContainerInfo(c.id, c.name, c.status, dict(c.labels)) for c in found]

    def remove(self, container_id: str, grace_s: int = 10) -> None:
        """Stop (SIGTERM, then SIGKILL after ``grace_s``) and remove; gone already is fine."""
        import docker

        try:
            c = self.client.containers.get(container_id)
            if c.status == "running":
                c.stop(timeout=grace_s)
            c.remove(force=True)
        except docker.errors.NotFound:
            pass

    def run(self, spec: ContainerSpec, log_path: Path, grace_s: float = START_GRACE_S) -> DockerRay:
        """Create and start the container; fail at once if it exits within ``grace_s``."""
        import docker

        try:
            c = self.client.containers.create(**create_kwargs(spec))
        except docker.errors.ImageNotFound:
            raise _fail(f"the image {spec.image} is missing", "pull or build it") from None
        except docker.errors.APIError as exc:
            raise self._create_error(spec, exc) from None
        try:
            c.start()
            c.reload()
        except docker.errors.APIError as exc:
            why = _one_line(str(exc.explanation or exc))
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True)
            raise _fail(
                f"the Ray container did not start: {why}", f"check runtime.image ({spec.image})"
            ) from None
        node_ip = "" if spec.host_network else container_ip(c.attrs, spec.network)
        handle = DockerRay(c, log_path, node_ip)
        deadline = time.monotonic() + grace_s
        while handle.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        rc = handle.poll()
        if rc is not None:
            last = ""
            with contextlib.suppress(docker.errors.DockerException):
                raw = c.logs(stdout=True, stderr=True, tail=3)
                last = " | ".join(ln.strip() for ln in raw.decode(errors="replace").splitlines())
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True)
            raise _fail(
                f"the Ray container exited at start with code {rc}: "
                f"{_one_line(last or 'no output', 300)}",
                f"check runtime.image ({spec.image})",
            )
        return handle

    def _create_error(self, spec: ContainerSpec, exc: Any) -> DockerError:
        why = _one_line(str(exc.explanation or exc))
        if "device driver" in why and spec.gpu_ids:
            return _fail(
                f"Docker cannot give the container GPUs ({why})",
                "install the NVIDIA Container Toolkit and restart dockerd, or set lend.gpus: 0",
            )
        if "network" in why.lower() and "not found" in why.lower():
            return _fail(
                f"the Docker network '{spec.network}' does not exist",
                "create it or set runtime.docker_network: host",
            )
        return _fail(f"Docker could not create the Ray container: {why}")

    def adopt(self, container_id: str, log_path: Path, network: str) -> DockerRay:
        """A handle on a container that already runs (left by an agent that died)."""
        c = self.client.containers.get(container_id)
        node_ip = "" if network == "host" else container_ip(c.attrs, network)
        return DockerRay(c, log_path, node_ip, adopted=True)

    def memory_bytes(self, container_id: str) -> int:
        """Memory the container uses now (its cgroup's usage less the page cache)."""
        stats = self.client.containers.get(container_id).stats(stream=False)
        mem = stats.get("memory_stats") or {}
        cache = int((mem.get("stats") or {}).get("total_inactive_file", 0))
        return max(0, int(mem.get("usage", 0)) - cache)


def container_ip(attrs: Mapping[str, Any], network: str) -> str:
    nets = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return str((nets.get(network) or {}).get("IPAddress") or "")


# ----- pulling: progress and failures -------------------------------------------------------

_NO_NETWORK = (
    "dial tcp",
    "no such host",
    "connection refused",
    "i/o timeout",
    "network is unreachable",
    "timeout",
    "temporary failure",
    "tls handshake",
    "connection reset",
    "no route to host",
)
_NO_IMAGE = ("manifest unknown", "not found", "does not exist", "pull access denied")


def pull_error(image: str, reason: str) -> DockerError:
    """One line for a failed pull: no registry reachable, no such image or tag, or other."""
    why = _one_line(reason)
    low = why.lower()
    fix = f"load or build {image} with docker"
    if any(s in low for s in _NO_NETWORK):
        return _fail(f"cannot pull {image}: no registry reachable ({why})", fix)
    if any(s in low for s in _NO_IMAGE):
        return _fail(f"cannot pull {image}: no such image or tag in the registry ({why})", fix)
    return _fail(f"cannot pull {image}: {why}", fix)


def pull_progress(image: str, layers: Mapping[str, tuple[str, int, int]]) -> str:
    """``pulling IMAGE: 3 of 7 layers done, 120.5 of 480.2 MB``."""
    done = sum(1 for s, _, _ in layers.values() if s in ("Pull complete", "Already exists"))
    cur = sum(c for _, c, _ in layers.values())
    tot = sum(t for _, _, t in layers.values())
    size = f", {cur / 1e6:.1f} of {tot / 1e6:.1f} MB" if tot else ""
    return f"pulling {image}: {done} of {len(layers)} layers done{size}"


# ----- Ray in a container, as a RayHandle ---------------------------------------------------


class DockerRay:
    """Ray running in a container, supervised like a child process.

    One thread waits for the container to exit; another appends its output (stdout and
    stderr, as Docker keeps it) to ``log_path``. ``poll`` returns the exit code only once
    that output is in the file, so a failure message read from the log is complete.
    """

    def __init__(
        self, container: Any, log_path: Path, node_ip: str = "", adopted: bool = False
    ) -> None:
        self.container = container
        self.id: str = container.id
        self.name: str = container.name
        self.node_ip = node_ip
        self.adopted = adopted
        self.log_path = log_path
        self._pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
        self._returncode: int | None = None
        self._exited = threading.Event()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._follower = threading.Thread(
            target=self._follow, name=f"docker-log-{self.name}", daemon=True
        )
        self._waiter = threading.Thread(
            target=self._wait, name=f"docker-wait-{self.name}", daemon=True
        )
        self._follower.start()
        self._waiter.start()

    @property
    def pid(self) -> int:
        """The container's first process (``docker-init``) as the host sees it."""
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def poll(self) -> int | None:
        return self._returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"container {self.name}", timeout or 0.0)
        assert self._returncode is not None
        return self._returncode

    def stop(self, grace_s: float = 15.0) -> int | None:
        """Stop Ray (SIGTERM, SIGKILL after ``grace_s``) and remove the container."""
        import docker

        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.container.stop(timeout=int(grace_s))
        self._exited.wait(10.0)
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.container.remove(force=True)
        return self._returncode

    def _append(self, line: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "ab") as f:
            f.write(f"lanray: {line}\n".encode())

    def _follow(self) -> None:
        """Append the container's output, from its start, until it exits."""
        if self.adopted:
            self._append(f"adopted the running container {self.name}; its output so far:")
        try:
            stream = self.container.logs(stream=True, follow=True, stdout=True, stderr=True)
            with open(self.log_path, "ab", buffering=0) as out:
                for chunk in stream:
                    out.write(chunk)
        except Exception as exc:  # the daemon went away: say so, the waiter decides the rest
            self._append(f"stopped following {self.name}'s output: {_one_line(str(exc))}")

    def _wait(self) -> None:
        import docker

        failures = 0
        rc = 255
        while True:
            try:
                rc = int(self.container.wait().get("StatusCode", 255))
                break
            except docker.errors.NotFound:
                rc = 137  # removed under us (docker rm -f)
                break
            except Exception as exc:  # the daemon restarts or is gone
                failures += 1
                if failures >= 5:
                    self._append(f"lost the Docker daemon: {_one_line(str(exc))}")
                    break
                time.sleep(1.0)
        self._follower.join(3.0)  # its output first, then the exit code
        self._returncode = rc
        self._exited.set()
