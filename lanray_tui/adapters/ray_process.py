"""Ray as a child process: the ``ray start --block`` command line, its environment, and stop.

Token authentication and mutual TLS are always on: every Ray process, driver and client gets
``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``, and ``RAY_USE_TLS`` with the node's certificate,
key and CA certificate, through its environment (never on the command line, where ``ps``
shows it). The head's dashboard and Jobs API listen on loopback only: nothing of Ray answers
in clear on the LAN.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..core.types import LanrayError
from . import system

STARTED_MARKER = "Ray runtime started"
DASHBOARD_HOST = "127.0.0.1"
TLS_KEYS = ("RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")


class RayTlsMissing(LanrayError):
    """Ray was about to run without its TLS settings."""


def ray_executable() -> str:
    """The ``ray`` script next to this Python, so the pinned Ray is the one that runs."""
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def ray_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return "not installed"


@dataclass
class RaySpec:
    """What to start: a head (``head=True``) or a worker joining ``address``."""

    head: bool
    node_ip: str
    temp_dir: Path
    ports: Mapping[str, int]
    address: str = ""
    num_cpus: int | None = None
    num_gpus: int | None = None
    memory_bytes: int | None = None
    include_dashboard: bool = True
    labels: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        p = self.ports
        argv = [ray_executable(), "start", "--block", "--disable-usage-stats"]
        argv += ["--node-ip-address", self.node_ip, "--temp-dir", str(self.temp_dir)]
        if self.head:
            argv += ["--head", "--port", str(p["gcs_port"])]
            argv += ["--include-dashboard", "true" if self.include_dashboard else "false"]
            # the dashboard and the Jobs API speak HTTP in clear: the head's own agent only
            argv += [
                "--dashboard-host",
                DASHBOARD_HOST,
                "--dashboard-port",
                str(p["dashboard_port"]),
            ]
            argv += ["--ray-client-server-port", str(p["client_server_port"])]
        else:
            argv += ["--address", self.address]
        argv += ["--node-manager-port", str(p["node_manager_port"])]
        argv += ["--object-manager-port", str(p["object_manager_port"])]
        argv += ["--dashboard-agent-listen-port", str(p["dashboard_agent_listen_port"])]
        argv += ["--dashboard-agent-grpc-port", str(p["dashboard_agent_grpc_port"])]
        argv += ["--runtime-env-agent-port", str(p["runtime_env_agent_port"])]
        argv += ["--metrics-export-port", str(p["metrics_export_port"])]
        argv += ["--min-worker-port", str(p["min_worker_port"])]
        argv += ["--max-worker-port", str(p["max_worker_port"])]
        if self.num_cpus is not None:
            argv += ["--num-cpus", str(self.num_cpus)]
        if self.num_gpus is not None:
            argv += ["--num-gpus", str(self.num_gpus)]
        if self.memory_bytes is not None:
            argv += ["--memory", str(self.memory_bytes)]
        if self.labels:
            argv += ["--labels", ",".join(f"{k}={v}" for k, v in self.labels.items())]
        return argv

    def env(self) -> dict[str, str]:
        """What ``ray start`` takes from its environment, not its flags: how the raylet
        connects to its own object store (:data:`STORE_CONNECT`), and the ports of the
        head's dashboard and autoscaler metrics exporters (when the spec names them)."""
        env = dict(STORE_CONNECT)
        if self.head:
            names = {"dashboard_metrics_port": "DASHBOARD_METRIC_PORT",
                     "autoscaler_metrics_port": "AUTOSCALER_METRIC_PORT"}  # fmt: skip
            env.update({var: str(self.ports[k]) for k, var in names.items() if k in self.ports})
        return env


#: Ray's raylet starts its object store in a thread, waits 500 µs, and connects to it; a
#: try that comes before the store listens (on a busy machine, often: seen with TLS on, where
#: the other processes' handshakes take the CPU then) waits a whole
#: ``raylet_client_connect_timeout_milliseconds`` (1000) before the next of its
#: ``raylet_client_num_connect_attempts`` (10). The same 10 s in 50 ms steps: a node starts
#: up to a second sooner, and a store that is slow to come up has as long as before.
STORE_CONNECT = {
    "RAY_raylet_client_connect_timeout_milliseconds": "50",
    "RAY_raylet_client_num_connect_attempts": "200",
}


def auth_env(
    token: str, tls_env: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment every Ray process and client of this cluster needs: the token and
    Ray's TLS settings ``tls_env`` (``RAY_USE_TLS=1`` and the three PEM paths)."""
    if tls_env.get("RAY_USE_TLS") != "1" or not all(tls_env.get(k) for k in TLS_KEYS):
        raise RayTlsMissing("Ray's TLS settings are missing: Ray does not run in clear")
    env = dict(os.environ if base is None else base)
    env.update({k: tls_env[k] for k in TLS_KEYS})
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = token
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


class RayHandle(Protocol):
    """What the agent supervises: Ray run natively or in a container."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def stop(self) -> int | None: ...


class NativeRay:
    """``ray start --block`` as a child process of the agent."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        return stop(self.proc)


class AdoptedRay:
    """A ``ray start --block`` that an earlier agent started and this one took over: not
    this process's child, so it is watched by PID and stopped by signals."""

    adopted = True
    POLL_S = 0.2

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._returncode: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def poll(self) -> int | None:
        if self._returncode is None and not system.pid_alive(self._pid):
            self._returncode = -1  # its real exit code went to its parent, not to us
        return self._returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"ray start (pid {self._pid})", timeout or 0)
            time.sleep(self.POLL_S)
        assert self._returncode is not None
        return self._returncode

    def stop(self) -> int | None:
        system.terminate_tree(self._pid, 15.0)
        return self.poll()


def start(spec: RaySpec, token: str, tls_env: Mapping[str, str], log_path: Path) -> NativeRay:
    """Start ``ray start --block`` in its own session, its output appended to ``log_path``."""
    env = {**auth_env(token, tls_env), **spec.env()}
    spec.temp_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return NativeRay(
            subprocess.Popen(
                spec.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )


def stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> int | None:
    """Stop Ray and every process it started; returns the exit code of ``ray start``."""
    system.terminate_tree(proc.pid, grace_s)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def drain(
    gcs_address: str,
    node_id: str,
    token: str,
    tls_env: Mapping[str, str],
    deadline_s: int,
    message: str,
) -> bool:
    """Ask the GCS to drain a node: no new work; its tasks get ``deadline_s`` to finish."""
    argv = [
        ray_executable(),
        "drain-node",
        "--address",
        gcs_address,
        "--node-id",
        node_id,
        "--reason",
        "DRAIN_NODE_REASON_PREEMPTION",
        "--reason-message",
        message[:200],
        "--deadline-remaining-seconds",
        str(deadline_s),
    ]
    env = auth_env(token, tls_env)
    try:
        p = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0
