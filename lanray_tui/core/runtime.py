"""Where Ray runs on this node: natively (the installed Ray) or in a Docker container.

The agent supervises either through the same :class:`RayHandle`: poll, wait, stop.

The docker runtime runs ``ray start --block`` in a container built from the same
:class:`RaySpec` as the native one. Each container carries labels naming its role, its
cluster and the agent it belongs to (machine and HOME), so that an agent that died and
came back adopts its running container instead of starting a second one, and ``leave``
removes exactly its own. Nothing here imports ``docker``: the adapter does, on first use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..adapters import ray_process
from ..adapters.ray_process import RayHandle, RaySpec
from . import ray_tls
from .cluster_ca import NodeTls
from .config import Config
from .errors import LanrayError

if TYPE_CHECKING:
    from ..adapters.docker_engine import Engine

log = logging.getLogger("lanray.runtime")

Progress = Callable[[str], None]

ROLE_LABEL = "lanray.role"  # head | worker
CLUSTER_LABEL = "lanray.cluster"  # the cluster id
HOME_LABEL = "lanray.home"  # "machine:HOME" of the agent that owns the container
CONFIG_LABEL = "lanray.config"  # digest of what the container runs: adopt only an equal one

CONTAINER_TEMP_DIR = Path("/tmp/ray")
# On an --internal network no outside name resolves, but each lookup waits for the resolver's
# timeouts (10 s): Ray's dashboard looks up cloud metadata hosts at start and answers nothing
# meanwhile. One try of one second each makes that wait short.
INTERNAL_DNS_OPTIONS = ("timeout:1", "attempts:1")
NODE_IP_SLOT = "@LANRAY_NODE_IP@"
# Ray's TLS files inside the container. The node's own key file is readable by this node's
# user only, not by the image's user: the agent hands the three PEMs over in the container's
# environment (LANRAY_PEM_<Ray's variable>), and the launcher writes them here (mode 0600,
# as the container's user) and takes them out of the environment before Ray starts.
CONTAINER_TLS_DIR = "/tmp/lanray-tls"
CONTAINER_TLS_FILES = {
    "RAY_TLS_SERVER_CERT": "node.pem",
    "RAY_TLS_SERVER_KEY": "node.key",
    "RAY_TLS_CA_CERT": "ca.pem",
}
PEM_PREFIX = "LANRAY_PEM_"
# The launcher: the TLS files from the environment, then, on a network of its own (where the
# container learns its address only once it runs), Ray with the address Docker gave it (the
# one its /etc/hosts lists for its host name).
_LAUNCH = f"""\
import os, socket, sys
for var in [k for k in os.environ if k.startswith({PEM_PREFIX!r})]:
    pem = os.environ.pop(var).encode()
    path = os.environ[var[len({PEM_PREFIX!r}):]]
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, pem)
    os.close(fd)
argv = sys.argv[1:]
if {NODE_IP_SLOT!r} in argv:
    ip = socket.gethostbyname(socket.gethostname())
    argv = [a.replace({NODE_IP_SLOT!r}, ip) for a in argv]
    print('lanray: container address', ip, flush=True)
os.execvp(argv[0], argv)
"""


def container_tls_env(pems: Mapping[str, bytes]) -> dict[str, str]:
    """Ray's TLS settings inside the container, and the PEMs for the launcher to write."""
    env = {"RAY_USE_TLS": "1"}
    for var, name in CONTAINER_TLS_FILES.items():
        env[var] = f"{CONTAINER_TLS_DIR}/{name}"
        env[PEM_PREFIX + var] = pems[var].decode()
    return env


def start_ray(
    cfg: Config,
    spec: RaySpec,
    token: str,
    tls_dir: Path,
    log_path: Path,
    cluster_id: str,
    role: str,
    progress: Progress | None = None,
) -> RayHandle:
    """Start Ray for this node with the configured runtime.

    A handle may carry ``node_ip`` when the runtime chose the address Ray uses (a container
    on its own network); the agent then uses that address. ``progress`` hears what the
    docker runtime does (pulling an image can take minutes); it also goes to ``log_path``.
    Ray runs with mutual TLS from the node's files in ``tls_dir``; without them it does not
    start (:class:`~.ray_tls.NoCertificate`).
    """
    # Config validation allows only "native" and "docker" here.
    if cfg["runtime.kind"] == "docker":
        return _start_docker(cfg, spec, token, tls_dir, log_path, cluster_id, role, progress)
    return ray_process.start(spec, token, ray_tls.ray_env(tls_dir), log_path)


def cert_addresses(cfg: Config) -> list[str]:
    """The addresses this node's certificate must name besides its own: on a Docker network
    of its own, every address Docker may give its Ray container there (Ray's gRPC checks the
    address it dials against the certificate). One line when that network is too large for
    a certificate."""
    if not chooses_node_ip(cfg):
        return []
    import ipaddress

    from ..adapters import docker_engine
    from .cluster_ca import MAX_IPS

    name = cfg["runtime.docker_network"]
    try:
        net = docker_engine.connect().network(name)
    except docker_engine.DockerError as exc:
        raise LanrayError(f"cannot read the Docker network '{name}': {exc}") from None
    if net is None:
        raise LanrayError(f"the Docker network '{name}' does not exist")
    out: list[str] = []
    room = MAX_IPS - 2  # the node's own address and loopback come first
    for conf in (net.get("IPAM") or {}).get("Config") or []:
        try:
            subnet = ipaddress.ip_network(str(conf.get("Subnet", "")))
        except ValueError:
            continue
        if subnet.version != 4:
            continue
        if subnet.num_addresses - 2 > room + 1:  # its hosts, less the gateway
            raise LanrayError(
                f"the Docker network '{name}' ({subnet}) has more addresses than a node's "
                f"certificate can name ({room}): use a /29 network (docker network create "
                f"--subnet A.B.C.D/29 ...) or runtime.docker_network: host"
            )
        gateway = str(conf.get("Gateway", ""))
        out += [str(ip) for ip in subnet.hosts() if str(ip) != gateway]
    return out[:room]


def chooses_node_ip(cfg: Config) -> bool:
    """True when the runtime, not the agent, picks the address Ray uses: a container on a
    Docker network of its own gets its address from Docker (the handle's ``node_ip``)."""
    return cfg["runtime.kind"] == "docker" and (cfg["runtime.docker_network"] or "host") != "host"


def remove_ray(cfg: Config, cluster_id: str) -> None:
    """Remove what the runtime left for this node on ``leave``: every container of this
    agent (whatever its cluster; nothing natively)."""
    if cfg["runtime.kind"] != "docker":
        return
    from ..adapters import docker_engine

    engine = docker_engine.connect()
    for c in engine.containers({HOME_LABEL: home_label()}):
        log.info("removing container %s", c.name)
        engine.remove(c.id)


# ----- the docker runtime -------------------------------------------------------------------


def home_label() -> str:
    """Which agent a container belongs to: one agent runs per HOME on a machine."""
    home = os.path.realpath(os.path.expanduser("~"))
    return f"{socket.gethostname()}:{home}"


def role_label(role: str) -> str:
    return "head" if role == "host" else "worker"


def container_name(role: str) -> str:
    digest = hashlib.sha256(home_label().encode()).hexdigest()[:10]
    return f"lanray-{role_label(role)}-{digest}"


def default_image(gpu: bool, ray_version: str | None = None) -> str:
    """The Ray project's image for this Ray and Python (``rayproject/ray:2.60.0-py311``)."""
    version = ray_version or ray_process.ray_version()
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return f"rayproject/ray:{version}-{py}{'-gpu' if gpu else ''}"


def container_command(spec: RaySpec, host_network: bool) -> list[str]:
    """``ray start --block`` for the container, through the launcher that writes Ray's TLS
    files: the spec's flags with the container's ``ray`` and temp dir; on a network of its
    own, with the address it gets there."""
    ip = spec.node_ip if host_network else NODE_IP_SLOT
    argv = dataclasses.replace(spec, node_ip=ip, temp_dir=CONTAINER_TEMP_DIR).argv()
    return ["python3", "-c", _LAUNCH, "ray", *argv[1:]]


def shm_size_bytes() -> int:
    """/dev/shm for Ray's object store (30% of memory by default): half the machine's
    memory, at least 1 GiB. tmpfs takes memory only as it fills."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 0
    return max(1 << 30, total // 2)


@dataclasses.dataclass(frozen=True)
class GpuPlan:
    """Which GPUs the container gets, and what to tell the user about it."""

    ids: tuple[str, ...] = ()
    seen: int = 0
    warning: str = ""
    error: str = ""


def gpu_plan(
    seen: int, reason: str, ids: Sequence[str], has_toolkit: bool, wanted: int | None
) -> GpuPlan:
    """From what NVML sees (``seen`` GPUs, their ``ids``) and whether Docker can pass GPUs
    (the NVIDIA Container Toolkit), the device request for ``lend.gpus`` = ``wanted``."""
    if seen <= 0 or wanted == 0:
        return GpuPlan(seen=max(seen, 0))
    if not has_toolkit:
        msg = (
            f"{seen} NVIDIA GPU{'s' if seen > 1 else ''} found, but Docker has no NVIDIA runtime "
            "(install the NVIDIA Container Toolkit and restart the Docker daemon)"
        )
        if wanted:
            return GpuPlan(
                seen=seen, error=f"{msg}; or set lend.gpus: 0, or use runtime.kind: native"
            )
        return GpuPlan(seen=seen, warning=f"{msg}: Ray in Docker lends no GPU")
    chosen = list(ids) or [str(i) for i in range(seen)]
    if wanted is not None:
        chosen = chosen[:wanted]
    return GpuPlan(ids=tuple(chosen), seen=seen)


def _nvml_gpus() -> tuple[int, str, list[str]]:
    """(GPUs NVML sees, why none, their ids); never raises (no NVML adapter, no driver)."""
    try:
        from ..adapters import nvml

        count, reason = nvml.gpu_count_and_reason()
        return count, reason, (nvml.device_request_ids() if count else [])
    except Exception as exc:
        return 0, f"NVML not available: {exc}", []


def config_digest(
    image: str,
    network: str,
    command: Sequence[str],
    gpus: Sequence[str],
    token: str,
    pems: Mapping[str, bytes],
) -> str:
    """What the container runs, in 16 hex digits: a running container is adopted only when
    the agent would start the very same one (same image, network, flags, GPUs, token, TLS
    certificate, key and CA)."""
    doc = json.dumps([image, network, list(command), list(gpus)])
    doc += hashlib.sha256(token.encode()).hexdigest()
    for var in sorted(pems):
        doc += hashlib.sha256(var.encode() + b"=" + pems[var]).hexdigest()
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _sayer(log_path: Path, progress: Progress | None) -> Callable[..., None]:
    """``say(line, level=INFO)``: to the agent's log, the node's Ray log and ``progress``."""

    def say(line: str, level: int = logging.INFO) -> None:
        log.log(level, "%s", line)
        try:
            with open(log_path, "ab") as f:
                f.write(f"lanray: {line}\n".encode())
        except OSError:
            pass
        if progress is not None:
            progress(line)

    return say


def _start_docker(
    cfg: Config,
    spec: RaySpec,
    token: str,
    tls_dir: Path,
    log_path: Path,
    cluster_id: str,
    role: str,
    progress: Progress | None,
) -> RayHandle:
    from ..adapters import docker_engine

    pems = ray_tls.pem_files(tls_dir)

    log_path.parent.mkdir(parents=True, exist_ok=True)
    say = _sayer(log_path, progress)
    engine = docker_engine.connect()
    network = cfg["runtime.docker_network"] or "host"
    host_network = network == "host"
    dns_options = () if host_network else _network_dns_options(engine, network)
    seen, reason, ids = _nvml_gpus()
    plan = gpu_plan(seen, reason, ids, engine.has_nvidia() if seen else False, spec.num_gpus)
    if plan.error:
        raise LanrayError(plan.error)
    if plan.warning:
        say(plan.warning, logging.WARNING)
    image = cfg["runtime.image"] or default_image(gpu=bool(plan.ids))
    tls = container_tls_env(pems)
    command = container_command(spec, host_network)
    labels = {
        ROLE_LABEL: role_label(role),
        CLUSTER_LABEL: cluster_id,
        HOME_LABEL: home_label(),
        CONFIG_LABEL: config_digest(image, network, command, plan.ids, token, pems),
    }
    adopted = _adopt_or_clear(engine, labels, log_path, network, say)
    if adopted is not None:
        return adopted
    if not engine.has_image(image):
        engine.pull(image, say)
    container = docker_engine.ContainerSpec(
        name=container_name(role),
        image=image,
        command=command,
        environment={**ray_process.auth_env(token, tls, base={}), **tls, **spec.env()},
        labels=labels,
        network=network,
        shm_size=shm_size_bytes(),
        gpu_ids=plan.ids,
        dns_options=dns_options,
    )
    gpus = f", GPUs {','.join(plan.ids)}" if plan.ids else ""
    say(f"starting container {container.name} from {image} on network {network}{gpus}")
    handle = engine.run(container, log_path)
    if handle.node_ip:
        say(f"container {container.name} has address {handle.node_ip}")
        if not NodeTls(tls_dir).covers([handle.node_ip]):
            # Ray's gRPC checks the address it dials against the certificate
            say(
                f"this node's certificate does not name the container's address "
                f"{handle.node_ip}: Ray's TLS will refuse it; use runtime.docker_network: host",
                logging.WARNING,
            )
    return handle


def _network_dns_options(engine: Engine, network: str) -> tuple[str, ...]:
    """DNS options for a container on Docker network ``network``: short lookups on an
    ``--internal`` one (see :data:`INTERNAL_DNS_OPTIONS`). The network must exist."""
    net = engine.network(network)
    if net is None:
        raise LanrayError(
            f"the Docker network '{network}' does not exist; create it (docker network "
            f"create {network}) or set runtime.docker_network: host, or use runtime.kind: "
            "native"
        )
    return INTERNAL_DNS_OPTIONS if net.get("Internal") else ()


def _adopt_or_clear(
    engine: Engine, labels: dict[str, str], log_path: Path, network: str, say: Progress
) -> RayHandle | None:
    """This agent's running container when it is the one it would start; other containers
    of this agent (stopped, or for another cluster or setting) are removed."""
    mine = engine.containers({HOME_LABEL: labels[HOME_LABEL]})
    for c in mine:
        if c.running and all(c.labels.get(k) == v for k, v in labels.items()):
            say(f"adopting the running container {c.name} ({c.id[:12]})")
            return engine.adopt(c.id, log_path, network)
    for c in mine:
        say(f"removing this node's old container {c.name} ({c.status})")
        engine.remove(c.id)
    return None
