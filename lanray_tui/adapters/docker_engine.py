"""Docker through the Docker SDK: the only module that imports ``docker``, and only on first
use, so that a machine without Docker pays nothing for it.

Every failure the user can act on becomes one :class:`DockerError` line that says what is
wrong and ends with the way out (``use runtime.kind: native``): the SDK or Docker missing,
the daemon down, no permission on its socket, an image that cannot be pulled, a container
that exits at start.

:class:`DockerRay` is Ray in a container seen as a :class:`~.ray_process.RayHandle`: the
agent polls, waits for and stops it like a child process, and a thread appends the
container's output to the node's Ray log, where the agent looks for Ray's start marker.

The parts: this module (the engine and its containers), :mod:`.docker_errors` (the one-line
failures and the daemon's socket), :mod:`.docker_pull` (pulling images, with progress) and
:mod:`.docker_ray` (:class:`DockerRay`). Every public name is re-exported here.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .docker_errors import (
    DEFAULT_HOST,
    HINT,
    DockerError,
    _fail,
    _one_line,
    docker_host,
    socket_problem,
)
from .docker_pull import PROGRESS_EVERY_S, Say, pull_error, pull_image, pull_progress
from .docker_ray import DockerRay

__all__ = [
    "API_TIMEOUT_S",
    "DEFAULT_HOST",
    "HINT",
    "PROGRESS_EVERY_S",
    "START_GRACE_S",
    "ContainerInfo",
    "ContainerSpec",
    "DockerError",
    "DockerRay",
    "Engine",
    "Say",
    "connect",
    "container_ip",
    "create_kwargs",
    "device_requests",
    "docker_host",
    "pull_error",
    "pull_progress",
    "socket_problem",
]

START_GRACE_S = 1.0  # a container that dies this soon is a set-up problem: report it at once
API_TIMEOUT_S = 60


# ----- connecting ---------------------------------------------------------------------------


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
        pull_image(self.client, image, say)

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
