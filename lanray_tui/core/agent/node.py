"""The node agent, wired: one long-lived process per machine that owns its part of the cluster.

It supervises Ray (:mod:`.supervisor`), serves the control API (:mod:`.control_server`),
heartbeats (:mod:`.heartbeats`), lends the machine only while its owner is away
(:mod:`.lending_loop`) and, on the host, runs the cluster's services (:mod:`.host_services`).
This module only builds those parts from the config and connects them. The agent runs on
after the CLI or the TUI that started it exits, and after an SSH session drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

from ... import __version__
from .. import cluster_api, credentials, netinfo, runtime, tunnel
from .. import protocol as p
from ..cluster_api import HeartbeatBook
from ..cluster_ca import CertError, NodeTls
from ..config import Config
from ..control import MAX_LINE
from ..credentials import Credentials
from ..errors import LanrayError
from ..paths import Paths, ensure_private_dir
from .control_server import ControlServer
from .heartbeats import HeartbeatReceiver, HeartbeatSender
from .host_ray import HostRayView
from .host_services import HostServices
from .lending_loop import LendingLoop, make_policy_parts
from .member_ops import MemberOps
from .node_ops import NodeOps, host_only
from .ray_link import RayLink, RayView
from .ray_start import RayStarter
from .recent_nodes import RecentNodes
from .start_gate import StartGate
from .state import AgentState, Clock, NodeState, RealClock, Role, StopCause
from .supervisor import RaySupervisor

log = logging.getLogger("lanray.agent")

FAILURE_LINGER_S = 3.0  # how long a failed agent waits for a client to read why
STATUS_FROM_HOST_TIMEOUT_S = 5.0
CERTIFY_TIMEOUT_S = 10.0
ADMIT_TIMEOUT_S = 5.0
TLS_HANDSHAKE_TIMEOUT_S = 10.0


class AgentLock:
    """An exclusive lock so that one HOME runs one agent, whatever races the CLI had."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise LanrayError(f"an agent already runs on this node (pid {other})") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())


class Agent:
    """One node's agent. ``role`` is ``host`` (Ray head) or ``worker`` (joins a head)."""

    def __init__(
        self, cfg: Config, role: str, paths: Paths | None = None, clock: Clock | None = None
    ) -> None:
        if role not in ("host", "worker"):
            raise LanrayError(f"unknown role '{role}'")
        self.cfg = cfg
        self.paths = paths or cfg.paths()
        self.role = Role(role)
        self.clock = clock or RealClock()
        self.creds_at_start = self._load_credentials()

    def _load_credentials(self) -> Credentials:
        stored = credentials.load(self.paths.credentials)
        if self.role is Role.WORKER:
            if stored is None or not stored.head_address:
                raise LanrayError("no cluster to join: run 'lanray-tui join ADDRESS --token ...'")
            return stored
        if stored is None:
            stored = Credentials.new(self.cfg["cluster_name"])
        return stored

    def run(self) -> int:
        """Run until ``leave``, SIGTERM or a failed first start; returns the exit code."""
        for d in (self.paths.runtime_dir, self.paths.state_dir, self.paths.data_dir):
            ensure_private_dir(d)
        AgentLock(self.paths.runtime_dir / "agent.lock").acquire()
        return asyncio.run(Wiring(self).main())


class Wiring:
    """The parts of one running agent, built inside its event loop."""

    def __init__(self, agent: Agent) -> None:
        cfg, paths = agent.cfg, agent.paths
        self.cfg, self.paths, self.clock = cfg, paths, agent.clock
        node = self.node = NodeState(role=agent.role, creds=agent.creds_at_start)
        self.tls = NodeTls(paths.tls_dir)
        self._client_tls: ssl.SSLContext | None = None
        self._prepare()
        self.beats = cluster_api.Link(self._host_api, self.client_tls)
        local_ray = RayLink(lambda: node.creds, paths.tls_dir)
        # the host keeps its last node list for status (see recent_nodes)
        self.recent = RecentNodes(local_ray) if node.is_host else None
        self.ray: RayView = (
            self.recent
            if self.recent is not None
            else HostRayView(self._host_api, self.client_tls, local_ray)
        )
        self.book = HeartbeatBook(
            cfg["cluster.heartbeat_interval_s"], cfg["cluster.missed_heartbeats"]
        )
        self.starter = RayStarter(cfg, paths, node)
        # the host's start gate: a slot is held at most a whole start's time, and a little
        slots = cfg["cluster.parallel_starts"] or max(2, os.cpu_count() or 2)
        self.gate = StartGate(slots, cfg["ray.start_timeout_s"] + 30.0)
        self.receiver = HeartbeatReceiver(
            node, self.book, self.gate, self.recent.changed if self.recent else lambda: None
        )
        self.supervisor = RaySupervisor(
            node,
            self.clock,
            self.starter,
            self.ray,
            paths.ray_log,
            float(cfg["ray.start_timeout_s"]),
            on_started=self.starter.adopt_node_ip,
            admit=None if node.is_host else self._admit,
        )
        sampler, watcher, policy = make_policy_parts(cfg)
        until = float(cfg["lending.until"])
        if until and until <= self.clock.time():
            log.warning("lending.until is in the past: lending with no end")
        node.lend_until = until if until > self.clock.time() else 0.0
        ends = float(cfg["cluster.expires"]) if node.is_host else 0.0
        node.cluster_ends = ends if ends > self.clock.time() else 0.0
        self.lending = LendingLoop(
            node,
            self.clock,
            self.supervisor,
            self.ray,
            sampler,
            watcher,
            policy,
            policy_on=not node.is_host and bool(cfg["lending.enabled"]),
            drain_deadline_s=int(cfg["lending.drain_deadline_s"]),
            started_at=self.clock.monotonic(),
        )
        self.host = (
            HostServices(node, cfg, self.clock, self.ray, paths.data_dir) if node.is_host else None
        )
        self.ops = NodeOps(
            node,
            self.ray,
            {"ray": paths.ray_log, "agent": paths.agent_log},
            self.runtime_view,
            lambda: self.lending.sample,
            lambda: self.host.free if self.host is not None else None,
            self.book,
            ask_host=None if node.is_host else self._status_from_host,
            pairing=self.host.pairing_view if self.host is not None else dict,
            recent_nodes=self.recent.recent if self.recent is not None else None,
            guard=lambda: self.starter.guard.view.to_json(),
        )
        self.server = ControlServer(
            forward_to=None if node.is_host else self._host_api,
            client_tls=self.client_tls,
        )
        self._register_ops()
        self._tasks: list[asyncio.Task[None]] = []

    def _register_ops(self) -> None:
        self.server.handlers.update(
            info=self.ops.op_info,
            status=self.ops.op_status,
            leave=self.ops.op_leave,
            heartbeat=self.receiver.op_heartbeat,
            pause=self.lending.op_pause,
            resume=self.lending.op_resume,
            restart_ray=self.lending.op_restart_ray,
            stop_ray=self.lending.op_stop_ray,
            lend=self.lending.op_lend,
            token=host_only("only the host prints the cluster token"),
            code=host_only("only the host has a join code"),
        )
        self.server.streams["logs"] = self.ops.stream_logs

    # ----- set-up -------------------------------------------------------------------------

    def _prepare(self) -> None:
        node, cfg = self.node, self.cfg
        if node.is_host:
            node.node_ip = cfg["ray.node_ip"] or netinfo.ip_for_host()
            node.creds = node.creds.replace(
                head_address=node.node_ip,
                gcs_port=cfg["ray.gcs_port"],
                dashboard_port=cfg["ray.dashboard_port"],
                cluster_name=cfg["cluster_name"],
            )
            credentials.save(self.paths.credentials, node.creds)
            # The cluster's CA (made with the cluster) and the host's own certificate, for
            # the addresses it has now.
            self.tls.ensure_ca(node.creds.cluster_id, node.creds.cluster_name)
            ips = [node.node_ip, *runtime.cert_addresses(cfg)]
            self.tls.issue_own(socket.gethostname(), list(dict.fromkeys(ips)))
        else:
            node.node_ip = cfg["ray.node_ip"] or netinfo.ip_for_head(
                node.creds.head_address, own_address=runtime.chooses_node_ip(cfg)
            )
            if not self.tls.ready():
                raise LanrayError(
                    "this node has no certificate of the cluster: "
                    "pair again with 'lanray-tui join --code CODE'"
                )

    def client_tls(self) -> ssl.SSLContext:
        """This node's TLS towards the host's cluster API (made once, again after a new
        certificate)."""
        if self._client_tls is None:
            try:
                self._client_tls = self.tls.client_context()
            except (OSError, ssl.SSLError) as exc:
                raise LanrayError(f"this node's certificate cannot be used: {exc}") from None
        return self._client_tls

    async def _certify_if_moved(self) -> None:
        """A worker whose address is not in its certificate (it moved to another network)
        asks the host for one that names it, before Ray starts with it."""
        if self.node.is_host or self.tls.covers([self.node.node_ip]):
            return
        host, port = self._host_api()
        csr = self.tls.request(socket.gethostname(), [self.node.node_ip])
        req = p.CertifyRequest(csr=csr.decode())
        try:
            got = await cluster_api.ask(host, port, req, self.client_tls(), CERTIFY_TIMEOUT_S)
            self.tls.store(got.cert.encode(), got.ca.encode())
        except (OSError, asyncio.TimeoutError, LanrayError) as exc:
            log.warning("no certificate for %s yet: %s", self.node.node_ip, exc)
            return
        except CertError as exc:
            log.warning("the host sent a certificate that does not fit: %s", exc)
            return
        self._client_tls = None
        self.beats.close()
        log.info("new certificate for %s", self.node.node_ip)

    def runtime_view(self) -> dict[str, Any]:
        return self.starter.runtime_view(self.supervisor.ray, self.supervisor.running)

    # ----- talking to the host (a worker) -------------------------------------------------

    def _host_api(self) -> tuple[str, int]:
        return self.node.creds.head_address, int(self.cfg["cluster.api_port"])

    async def _status_from_host(self) -> p.StatusReply | None:
        host, port = self._host_api()
        with contextlib.suppress(OSError, asyncio.TimeoutError, LanrayError):
            tls = self.client_tls()
            return await cluster_api.ask(
                host, port, p.StatusRequest(), tls, STATUS_FROM_HOST_TIMEOUT_S
            )
        return None

    async def _send_beat(self, beat: dict[str, Any], timeout: float) -> bool:
        with contextlib.suppress(OSError, asyncio.TimeoutError, LanrayError, ValueError):
            await self.beats.ask(p.HeartbeatRequest(**beat), timeout)
            return True
        return False

    async def _admit(self) -> tuple[bool, int]:
        """Ask the host's start gate. A host that does not answer lets this node go: Ray's
        own start then says what is wrong (an older host has no gate)."""
        try:
            got = await self.beats.ask(p.StartRequest(node_ip=self.node.node_ip), ADMIT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, LanrayError, ValueError):
            return True, 0
        return got.go, got.ahead

    def _beat(self) -> dict[str, Any]:
        n = self.node
        return {
            "node_ip": n.node_ip,
            "name": socket.gethostname(),
            "state": n.state.value,
            "lending": n.lending_view(),
            "resources": self.lending.sample,
            "runtime": self.runtime_view(),
        }

    # ----- the main loop ------------------------------------------------------------------

    async def main(self) -> int:
        node = self.node
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.stop, StopCause.SIGNAL)
        # SIGHUP: the terminal or SSH session went away; the agent stays.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        server = await self._serve_local()
        await self._certify_if_moved()
        log.info(
            "agent %s pid %d role %s on %s", __version__, os.getpid(), node.role.value, node.node_ip
        )
        supervisor = asyncio.create_task(self.supervisor.run())
        await asyncio.sleep(0)  # let the supervisor spawn Ray first
        api = await self._start_role()
        self._tasks.append(asyncio.create_task(self.lending.run()))
        await node.stopping.wait()
        if node.state is AgentState.FAILED:
            # Ray starts off the loop: a client waiting for it (host/join) should read why it
            # failed from 'info' before the socket goes, not only find the agent gone.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(node.failure_told.wait(), FAILURE_LINGER_S)
        failed = node.state is AgentState.FAILED
        node.state = AgentState.STOPPING
        await self._shut_down(server, api, supervisor)
        log.info("agent stopped (%s)", node.detail or "leave")
        return 1 if failed else 0

    async def _serve_local(self) -> asyncio.Server:
        sock_path = self.paths.socket
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()  # stale: we hold the lock, so no live agent owns it
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self.server.serve_local, path=str(sock_path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        os.chmod(sock_path, 0o600)
        return server

    async def _start_role(self) -> asyncio.Server | None:
        """The host's services and cluster API, or a worker's heartbeats."""
        if self.host is None:
            sender = HeartbeatSender(
                self.node,
                self.clock,
                self._send_beat,
                self._beat,
                self.supervisor.rejoin_if_lost,
                float(self.cfg["cluster.heartbeat_interval_s"]),
                int(self.cfg["cluster.missed_heartbeats"]),
            )
            self._tasks.append(asyncio.create_task(sender.run()))
            return None
        await self.host.start()
        members = MemberOps(self.ray, self.tls)
        self.server.handlers.update(
            self.host.handlers,
            ray_nodes=members.op_ray_nodes,
            running_tasks=members.op_running_tasks,
            certify=members.op_certify,
            probe=members.op_probe,
            start=self.receiver.op_start,
        )
        self.server.streams.update(self.host.streams)
        self.server.tunnels["dashboard"] = self._tunnel_dashboard
        try:
            return await asyncio.start_server(
                self.server.serve_remote,
                self.node.node_ip,
                self.cfg["cluster.api_port"],
                limit=MAX_LINE,
                reuse_address=True,
                ssl=self.tls.server_context(),
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S,
            )
        except (OSError, ssl.SSLError) as exc:
            log.error("cluster API not available: %s", exc)
            return None

    async def _tunnel_dashboard(
        self, req: p.DashboardRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await tunnel.serve_dashboard(reader, writer, self.node.creds.dashboard_port)

    async def _shut_down(
        self, server: asyncio.Server, api: asyncio.Server | None, supervisor: asyncio.Task[None]
    ) -> None:
        server.close()
        self.beats.close()
        if api is not None:
            api.close()
        for task in self._tasks:
            task.cancel()
        if self.host is not None:
            self.host.close()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        await asyncio.to_thread(self.supervisor.stop_ray)
        await asyncio.to_thread(self.starter.guard.remove)  # also when Ray had exited itself
        if self.node.stop_cause is StopCause.LEAVE:
            with contextlib.suppress(LanrayError):
                await asyncio.to_thread(runtime.remove_ray, self.cfg, self.node.creds.cluster_id)
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()
