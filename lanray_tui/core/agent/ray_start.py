"""How this node's Ray is started: the ``ray start`` command from the config, adopting a Ray
that an earlier agent left running (:mod:`..ray_record`), the address a container got, and
how Ray runs here for the nodes pane."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from ...adapters import ray_process, system
from .. import credentials, ray_record, ray_tls, runtime
from ..config import Config
from ..guard import PortGuard
from ..paths import Paths
from .state import NodeState

log = logging.getLogger("lanray.agent")

MEMORY_EVERY_S = 5.0


def ray_spec(
    cfg: Config, paths: Paths, head: bool, node_ip: str, gcs_address: str
) -> ray_process.RaySpec:
    """The ``ray start`` this node's agent runs, from the config (the benchmarks use it too)."""
    ports = {
        k[4:]: v for k, v in cfg.as_dict().items() if k.startswith("ray.") and k.endswith("_port")
    }
    mem = cfg["lend.memory_gb"]
    return ray_process.RaySpec(
        head=head,
        node_ip=node_ip,
        temp_dir=paths.ray_temp_dir,
        ports=ports,
        address=gcs_address,
        num_cpus=cfg["lend.cpus"],
        num_gpus=cfg["lend.gpus"],
        memory_bytes=int(mem * 1024**3) if mem is not None else None,
        include_dashboard=bool(cfg["ray.include_dashboard"]),
        labels={"lanray-name": label_value(socket.gethostname())},
    )


def label_value(name: str) -> str:
    """A host name as a Ray label value (letters, digits, '-', '_', '.'; at most 63)."""
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:63].strip("-_.")
    return clean or "node"


class RayStarter:
    """The supervisor's ``start``: adopt this node's running Ray (an earlier agent's), else
    start one with the configured runtime (the docker runtime adopts its own containers).
    Ray's plain-HTTP ports are guarded before it starts, until it stops (:mod:`..guard`)."""

    def __init__(self, cfg: Config, paths: Paths, node: NodeState) -> None:
        self.cfg, self.paths, self.node = cfg, paths, node
        self.guard = PortGuard(cfg.__getitem__)
        self._memory: tuple[float, int | None, dict[str, float | None]] = (-1e9, None, {})

    @property
    def native(self) -> bool:
        return self.cfg["runtime.kind"] == "native"

    def record(self) -> ray_record.RayRecord:
        n = self.node
        return ray_record.RayRecord(
            pid=0,
            started=0.0,
            cluster_id=n.creds.cluster_id,
            cluster_name=n.creds.cluster_name,
            role=n.role.value,
            node_ip=n.node_ip,
            gcs_address=n.creds.gcs_address,
            token_sha256=ray_record.token_digest(n.creds.token),
            temp_dir=str(self.paths.ray_temp_dir),
            tls_sha256=ray_tls.digest(self.paths.tls_dir),
        )

    def __call__(self, progress: Any) -> ray_process.RayHandle:
        n, want = self.node, self.record()
        tls_dir = self.paths.tls_dir
        ray_tls.ray_env(tls_dir)  # no certificate: one line, and Ray does not start
        self.guard.apply(n.is_host, n.node_ip, n.creds.head_address)
        if self.native:
            pid = ray_record.adoptable(self.paths.ray_record, want)
            if pid is not None:
                log.info("adopting the running Ray (pid %d) that an earlier agent started", pid)
                progress(f"adopting the running Ray (pid {pid})")
                return self.guard.around(ray_process.AdoptedRay(pid))
        spec = ray_spec(self.cfg, self.paths, n.is_host, n.node_ip, n.creds.gcs_address)
        ray = runtime.start_ray(
            self.cfg,
            spec,
            n.creds.token,
            tls_dir,
            self.paths.ray_log,
            n.creds.cluster_id,
            n.role.value,
            progress,
        )
        if self.native:
            ray_record.record_started(self.paths.ray_record, ray.pid, want)
        return self.guard.around(ray)

    def adopt_node_ip(self, ray: ray_process.RayHandle) -> None:
        """A container on its own network has its own address: Ray (and, on the host, the
        cluster's head address) is where the runtime put it."""
        ip = getattr(ray, "node_ip", "") or ""
        if not ip or ip == self.node.node_ip:
            return
        self.node.node_ip = ip
        if self.node.is_host:
            self.node.creds = self.node.creds.replace(head_address=ip)
            credentials.save(self.paths.credentials, self.node.creds)

    def runtime_view(self, ray: ray_process.RayHandle | None, running: bool) -> dict[str, Any]:
        """How Ray runs here, for the nodes pane: the runtime and, under docker, the
        container and whether it runs."""
        kind = str(self.cfg["runtime.kind"])
        view: dict[str, Any] = {"kind": kind, **self.memory(ray.pid if running and ray else None)}
        view["guard"] = self.guard.view.to_json()
        if kind == "docker":
            view["container"] = str(getattr(ray, "name", "") or "")
            lent = self.node.lent.is_set()
            view["container_state"] = "running" if running else "none" if lent else "stopped"
        return view

    def memory(self, ray_pid: int | None) -> dict[str, float | None]:
        """The agent's resident memory and Ray's in MiB (Ray's: the proportional set size of
        its process tree, so shared pages count once; None when it does not run here or runs
        in a container), read at most every few seconds, and at once when Ray started or
        stopped since."""
        at, pid, last = self._memory
        if time.monotonic() - at < MEMORY_EVERY_S and last and pid == ray_pid:
            return last
        ray_mb = None
        if ray_pid is not None and self.native:
            ray_mb = round(system.pss_bytes(system.process_tree(ray_pid)) / 2**20, 1)
        got = {"agent_mb": round(system.rss_bytes([os.getpid()]) / 2**20, 1), "ray_mb": ray_mb}
        self._memory = (time.monotonic(), ray_pid, got)
        return got
