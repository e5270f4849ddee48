"""The node agent: one long-lived process per machine that owns its part of the cluster.

It starts and supervises Ray (``ray start --block`` as a child, so it knows when Ray dies),
holds the cluster secret, and serves the control API on a Unix socket. It runs on after the
CLI or the TUI that started it exits, and after an SSH session drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..adapters import ray_dashboard, ray_process
from . import cluster_api, credentials, netinfo, runtime
from .cluster_api import FORWARDED_OPS, REMOTE_OPS, HeartbeatBook, authorized, forward
from .config import Config
from .control import MAX_LINE, encode
from .credentials import Credentials
from .errors import LanrayError
from .logfiles import contains, tail
from .models import GIB, AgentInfo, NodeInfo
from .paths import Paths, ensure_private_dir

if TYPE_CHECKING:
    from .announcer import Announcer, PairingService
    from .beacon import Beacon
    from .job_service import JobService
    from .joincode import CodeBook

log = logging.getLogger("lanray.agent")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
StreamHandler = Callable[[dict[str, Any], asyncio.StreamWriter], Awaitable[None]]
LOG_SOURCES = ("ray", "agent")

READY_POLL_S = 0.05
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)
FAILURE_LINGER_S = 3.0  # how long a failed agent waits for a client to read why


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

    def __init__(self, cfg: Config, role: str, paths: Paths | None = None) -> None:
        if role not in ("host", "worker"):
            raise LanrayError(f"unknown role '{role}'")
        self.cfg = cfg
        self.role = role
        self.paths = paths or cfg.paths()
        self.state = "starting"
        self.detail = ""
        self.node_ip = ""
        self.ray: ray_process.RayHandle | None = None
        self.creds: Credentials = self._load_credentials()
        self._stopping = asyncio.Event()
        self._failure_told = asyncio.Event()  # a client has read the "failed" state
        self._ever_ready = False
        self.handlers: dict[str, Handler] = {
            "info": self._op_info,
            "status": self._op_status,
            "token": self._op_token,
            "leave": self._op_leave,
            "code": self._op_code,
            "heartbeat": self._op_heartbeat,
            "pause": self._op_pause,
            "resume": self._op_resume,
            "restart_ray": self._op_restart_ray,
            "stop_ray": self._op_stop_ray,
        }
        self.codes: CodeBook | None = None
        self.summary: dict[str, float] = {"node_count": 0, "free_cpus": 0.0, "free_gpus": 0.0}
        # Lending: Ray runs only while this is set; pause/resume (and, later, the owner
        # policy) clear and set it. The kick wakes the supervisor to restart Ray at once.
        self._lending = asyncio.Event()
        self._lending.set()
        self.lending = {"state": "lending", "reason": "lent to the cluster"}
        self._kick = asyncio.Event()
        self.link = "n/a"  # worker: "UP" or "LOST" as its heartbeats see the host
        self.beats = HeartbeatBook(
            cfg["cluster.heartbeat_interval_s"], cfg["cluster.missed_heartbeats"]
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.monotonic()
        self.sample: dict[str, Any] = {}
        self._manual = "auto"  # "paused" after 'lanray-tui pause' until 'resume'
        self.announcer: Announcer | None = None
        self.jobs: JobService | None = None
        self.pairing: PairingService | None = None
        self.streams: dict[str, StreamHandler] = {"logs": self._stream_logs}

    # ----- set-up -------------------------------------------------------------------------

    def _load_credentials(self) -> Credentials:
        stored = credentials.load(self.paths.credentials)
        if self.role == "worker":
            if stored is None or not stored.head_address:
                raise LanrayError("no cluster to join: run 'lanray-tui join ADDRESS --token ...'")
            return stored
        if stored is None:
            stored = Credentials.new(self.cfg["cluster_name"])
        return stored

    def _ray_spec(self) -> ray_process.RaySpec:
        cfg = self.cfg
        ports = {
            k[4:]: v
            for k, v in cfg.as_dict().items()
            if k.startswith("ray.") and k.endswith("_port")
        }
        mem = cfg["lend.memory_gb"]
        return ray_process.RaySpec(
            head=self.role == "host",
            node_ip=self.node_ip,
            temp_dir=self.paths.ray_temp_dir,
            ports=ports,
            address=self.creds.gcs_address,
            num_cpus=cfg["lend.cpus"],
            num_gpus=cfg["lend.gpus"],
            memory_bytes=int(mem * 1024**3) if mem is not None else None,
            include_dashboard=bool(cfg["ray.include_dashboard"]),
            labels={"lanray-name": _label_value(socket.gethostname())},
        )

    def _prepare(self) -> None:
        if self.role == "host":
            self.node_ip = self.cfg["ray.node_ip"] or netinfo.ip_for_host()
            self.creds = self.creds.replace(
                head_address=self.node_ip,
                gcs_port=self.cfg["ray.gcs_port"],
                dashboard_port=self.cfg["ray.dashboard_port"],
                cluster_name=self.cfg["cluster_name"],
            )
            credentials.save(self.paths.credentials, self.creds)
        else:
            self.node_ip = self.cfg["ray.node_ip"] or netinfo.ip_for_head(
                self.creds.head_address, own_address=runtime.chooses_node_ip(self.cfg)
            )

    # ----- the main loop ------------------------------------------------------------------

    def run(self) -> int:
        """Run until ``leave``, SIGTERM or a failed first start; returns the exit code."""
        for d in (self.paths.runtime_dir, self.paths.state_dir, self.paths.data_dir):
            ensure_private_dir(d)
        lock = AgentLock(self.paths.runtime_dir / "agent.lock")
        lock.acquire()
        self._prepare()
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        # SIGHUP: the terminal or SSH session went away; the agent stays.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        sock_path = self.paths.socket
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()  # stale: we hold the lock, so no live agent owns it
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self._serve, path=str(sock_path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        os.chmod(sock_path, 0o600)
        log.info("agent %s pid %d role %s on %s", __version__, os.getpid(), self.role, self.node_ip)
        supervisor = asyncio.create_task(self._supervise())
        await asyncio.sleep(0)  # let the supervisor spawn Ray first
        api: asyncio.Server | None = None
        if self.role == "host":
            await self._start_jobs()
            await self._start_discovery()
            try:
                api = await asyncio.start_server(
                    self._serve_remote,
                    self.node_ip,
                    self.cfg["cluster.api_port"],
                    limit=MAX_LINE,
                    reuse_address=True,
                )
            except OSError as exc:
                log.error("cluster API not available: %s", exc)
        else:
            self._tasks.append(asyncio.create_task(self._heartbeat_loop()))
        self._tasks.append(asyncio.create_task(self._watch_machine()))
        await self._stopping.wait()
        if self.state == "failed":
            # Ray starts off the loop: a client waiting for it (host/join) should read why it
            # failed from 'info' before the socket goes, not only find the agent gone.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._failure_told.wait(), FAILURE_LINGER_S)
        self.state = "stopping"
        server.close()
        if api is not None:
            api.close()
        for task in self._tasks:
            task.cancel()
        for service in (self.announcer, self.pairing, self.jobs):
            if service is not None:
                service.close()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        await asyncio.to_thread(self._stop_ray)
        if self.detail == "leave":
            with contextlib.suppress(LanrayError):
                await asyncio.to_thread(runtime.remove_ray, self.cfg, self.creds.cluster_id)
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        log.info("agent stopped (%s)", self.detail or "leave")
        return 1 if self.state == "failed" else 0

    async def _start_jobs(self) -> None:
        """The cluster's job queue lives on the host, in SQLite under the data dir."""
        from .job_service import JobService

        try:
            self.jobs = JobService(
                self.paths.data_dir / "jobs.sqlite3",
                dashboard_url=lambda: self.creds.dashboard_url,
                token=lambda: self.creds.token,
                max_running=self.cfg["jobs.max_running_jobs"],
                cluster_ready=lambda: self.state == "ready",
                gcs_address=lambda: self.creds.gcs_address,
            )
            await self.jobs.start()
        except (OSError, LanrayError) as exc:
            log.error("the job queue is not available: %s", exc)
            self.jobs = None
            return
        self.handlers.update(self.jobs.handlers)
        self.streams.update(self.jobs.streams)

    async def _start_discovery(self) -> None:
        """Beacons and the pairing service: a host is found and joined without typing an IP.

        Imported here, after Ray was spawned, so that they do not delay the head's start.
        """
        from .announcer import Announcer, PairingService
        from .joincode import CodeBook

        cfg = self.cfg
        self.codes = CodeBook(
            ttl_s=cfg["pairing.code_ttl_s"],
            max_uses=cfg["pairing.code_uses"],
            max_failures=cfg["pairing.max_failures"],
        )
        try:
            self.pairing = PairingService(self.codes, self._credentials_for_joiner)
            await self.pairing.start(self.node_ip, cfg["pairing.port"])
            self.announcer = Announcer(
                cfg["discovery.port"],
                self._beacon,
                bytes.fromhex(self.creds.cluster_key),
                cfg["discovery.broadcast"],
                cfg["discovery.beacon_interval_s"],
            )
            await self.announcer.start()
        except OSError as exc:
            # Degrade: the cluster still works by address and token.
            log.error("discovery or pairing is not available: %s", exc)
            self.detail = f"discovery not available: {exc}"
        self._summary_task = asyncio.create_task(self._refresh_summary())

    def _beacon(self) -> Beacon:
        from . import discovery
        from .beacon import Beacon

        cfg = self.cfg
        return Beacon(
            cluster_id=self.creds.cluster_id,
            cluster_name=self.creds.cluster_name,
            host_name=discovery.own_hostname(),
            head_address=self.node_ip,
            gcs_port=cfg["ray.gcs_port"],
            dashboard_port=cfg["ray.dashboard_port"],
            pairing_port=cfg["pairing.port"],
            ray_version=ray_process.ray_version(),
            python_version=discovery.python_version(),
            runtime=cfg["runtime.kind"],
            node_count=int(self.summary["node_count"]),
            free_cpus=self.summary["free_cpus"],
            free_gpus=self.summary["free_gpus"],
            timestamp=time.time(),
            fingerprint=self.fingerprint,
        )

    @property
    def fingerprint(self) -> str:
        from .beacon import fingerprint

        return fingerprint(bytes.fromhex(self.creds.cluster_key) + b"lanray fingerprint")

    def _credentials_for_joiner(self, hello: dict[str, Any]) -> dict[str, Any]:
        c = self.creds
        return {
            "cluster_id": c.cluster_id,
            "cluster_name": c.cluster_name,
            "token": c.token,
            "cluster_key": c.cluster_key,
            "head_address": c.head_address,
            "gcs_port": c.gcs_port,
            "dashboard_port": c.dashboard_port,
        }

    async def _refresh_summary(self) -> None:
        """Node count and free resources for beacons, every few seconds (never overlapping)."""
        while not self._stopping.is_set():
            if self.state == "ready":
                with contextlib.suppress(LanrayError):
                    self.summary = await asyncio.to_thread(self._summarize)
            await asyncio.sleep(2.0)

    def _summarize(self) -> dict[str, float]:
        alive = [n for n in self._nodes() if n.state == "ALIVE"]
        usage = ray_dashboard.resource_usage(self.creds.dashboard_url, self.creds.token)
        cpu_used = usage.get("CPU", (0.0, 0.0))[0]
        gpu_used = usage.get("GPU", (0.0, 0.0))[0]
        mem_used = usage.get("memory", (0.0, 0.0))[0] / GIB
        return {
            "node_count": len(alive),
            "free_cpus": max(0.0, sum(n.cpus for n in alive) - cpu_used),
            "free_gpus": max(0.0, sum(n.gpus for n in alive) - gpu_used),
            "free_memory_gb": round(max(0.0, sum(n.memory_gb for n in alive) - mem_used), 2),
        }

    def _adopt_node_ip(self, ray: ray_process.RayHandle) -> None:
        """A container on its own network has its own address: Ray (and, on the host, the
        cluster's head address) is where the runtime put it."""
        ip = getattr(ray, "node_ip", "") or ""
        if not ip or ip == self.node_ip:
            return
        self.node_ip = ip
        if self.role == "host":
            self.creds = self.creds.replace(head_address=ip)
            credentials.save(self.paths.credentials, self.creds)

    def _stop_ray(self) -> None:
        if self.ray is not None and self.ray.poll() is None:
            log.info("stopping Ray (pid %d)", self.ray.pid)
            self.ray.stop()

    async def _supervise(self) -> None:
        restarts = 0
        while not self._stopping.is_set():
            if not self._lending.is_set():
                self.state, self.detail = "paused", self.lending["reason"]
                await _first(self._lending.wait(), self._stopping.wait())
                continue
            self._kick.clear()
            log_start = self.paths.ray_log.stat().st_size if self.paths.ray_log.exists() else 0
            try:
                # in a thread: the docker runtime may pull an image for minutes, and the
                # control socket must answer meanwhile (the detail shows the pull's progress)
                ray = await asyncio.to_thread(
                    runtime.start_ray,
                    self.cfg,
                    self._ray_spec(),
                    self.creds.token,
                    self.paths.ray_log,
                    self.creds.cluster_id,
                    self.role,
                    self._start_progress,
                )
            except LanrayError as exc:
                self.state, self.detail = "failed", str(exc)
                log.error("Ray did not start: %s", exc)
                self._stopping.set()
                return
            self.ray = ray
            self._adopt_node_ip(ray)
            log.info("started Ray (pid %d)", ray.pid)
            ready = await self._wait_ready(log_start)
            if ready:
                self._ever_ready = True
                restarts = 0
                self.state, self.detail = "ready", ""
                log.info("Ray is ready")
                rc = await asyncio.to_thread(ray.wait)
                if self._stopping.is_set():
                    return
                why = tail(self.paths.ray_log, 1, log_start)
                self.detail = f"Ray exited with code {rc}" + (f": {why}" if why else "")
            elif self._stopping.is_set():
                return
            if not self._ever_ready and self._lending.is_set() and not self._kick.is_set():
                # A first start that fails is a set-up problem: report it and go.
                await asyncio.to_thread(self._stop_ray)
                self.state = "failed"
                log.error("Ray did not start: %s", self.detail)
                self._stopping.set()
                return
            await asyncio.to_thread(self._stop_ray)
            if not self._lending.is_set():
                log.info("Ray stopped: %s", self.lending["reason"])
                continue
            if self._kick.is_set():
                restarts = 0
                self.state = "restarting"
                log.warning("restarting Ray now: %s", self.detail)
                continue
            delay = RESTART_BACKOFF_S[min(restarts, len(RESTART_BACKOFF_S) - 1)]
            restarts += 1
            self.state = "restarting"
            log.warning("%s; restarting Ray in %.0f s", self.detail, delay)
            await _first(self._stopping.wait(), self._kick.wait(), timeout=delay)

    def _start_progress(self, line: str) -> None:
        """What the runtime does while Ray starts (pulling an image...), for ``info``."""
        if self.state == "starting":
            self.detail = line

    async def _wait_ready(self, log_start: int) -> bool:
        """Wait for Ray to say it started, then for the head to list this node ALIVE."""
        assert self.ray is not None
        deadline = time.monotonic() + float(self.cfg["ray.start_timeout_s"])
        started = False
        while time.monotonic() < deadline and not self._stopping.is_set():
            if self._kick.is_set() or not self._lending.is_set():
                self.detail = "start abandoned"
                return False
            if self.ray.poll() is not None:
                why = tail(self.paths.ray_log, 3, log_start) or "no output"
                self.detail = f"Ray exited with code {self.ray.returncode}: {why}"
                return False
            if not started:
                started = contains(self.paths.ray_log, log_start, ray_process.STARTED_MARKER)
            if started:
                with contextlib.suppress(LanrayError):
                    nodes = await asyncio.to_thread(self._nodes, 2.0)
                    if any(self._is_me(n) for n in nodes):
                        return True
            await asyncio.sleep(READY_POLL_S)
        if not self._stopping.is_set():
            self.detail = f"Ray was not ready after {self.cfg['ray.start_timeout_s']} s"
        return False

    def _is_me(self, n: NodeInfo) -> bool:
        return (
            n.state == "ALIVE"
            and n.ip == self.node_ip
            and (n.role == "head") == (self.role == "host")
        )

    def _nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        return ray_dashboard.list_nodes(self.creds.dashboard_url, self.creds.token, timeout)

    # ----- the control API ----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._dispatch(reader, writer, remote=False)

    async def _serve_remote(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._dispatch(reader, writer, remote=True)

    async def _dispatch(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: bool
    ) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 30 if remote else None)
            if not line:
                return
            try:
                req = json.loads(line)
                op = req["op"]
            except (ValueError, KeyError, TypeError):
                writer.write(encode({"ok": False, "error": "bad request"}))
                return
            if remote and not (op in REMOTE_OPS and authorized(req, self.creds.token)):
                writer.write(encode({"ok": False, "error": "not authorized"}))
                return
            if not remote and self.role == "worker" and op in FORWARDED_OPS:
                req["auth"] = self.creds.token
                await forward(
                    self.creds.head_address, self.cfg["cluster.api_port"], req, writer, 10.0
                )
                return
            if op in self.streams:
                await self.streams[op](req, writer)
                return
            handler = self.handlers.get(op)
            if handler is None:
                writer.write(encode({"ok": False, "error": f"'{op}' is not available here"}))
                return
            try:
                result = await handler(req)
                writer.write(encode({"ok": True, "result": result}))
            except LanrayError as exc:
                writer.write(encode({"ok": False, "error": str(exc)}))
            except Exception as exc:  # one bad request must not take the agent down
                log.exception("control op %s failed", op)
                writer.write(encode({"ok": False, "error": f"{op} failed: {exc}"}))
        except (ConnectionError, asyncio.LimitOverrunError, ValueError, asyncio.TimeoutError):
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    def info(self) -> AgentInfo:
        return AgentInfo(
            pid=os.getpid(),
            version=__version__,
            role=self.role,
            state=self.state,
            detail=self.detail,
            cluster_name=self.creds.cluster_name,
            cluster_id=self.creds.cluster_id,
            head_address=self.creds.gcs_address,
            node_ip=self.node_ip,
            dashboard_url=self.creds.dashboard_url,
            ray_version=ray_process.ray_version(),
            link=self.link,
            lending=dict(self.lending),
        )

    async def _op_info(self, req: dict[str, Any]) -> Any:
        if self.state == "failed":
            self._failure_told.set()
        return self.info().to_json()

    async def _op_status(self, req: dict[str, Any]) -> Any:
        if self.role == "worker" and not req.get("auth"):
            # the host knows the links and lending of every node: ask it, else Ray alone
            with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError):
                msg = await cluster_api.request(
                    self.creds.head_address,
                    self.cfg["cluster.api_port"],
                    {"op": "status", "auth": self.creds.token},
                    5.0,
                )
                if msg.get("ok"):
                    return {
                        "nodes": msg["result"]["nodes"],
                        "agent": self.info().to_json(),
                        "free": msg["result"].get("free"),
                    }
        nodes = await asyncio.to_thread(self._nodes)
        return {
            "nodes": [self._node_view(n) for n in nodes],
            "agent": self.info().to_json(),
            # what Ray has not handed out (from the host's summary, a few seconds old)
            "free": self.summary
            if self.role == "host" and "free_memory_gb" in self.summary
            else None,
        }

    def _node_view(self, n: NodeInfo) -> dict[str, Any]:
        """A Ray node plus what the heartbeats say: its link, lending state and resources."""
        view = n.to_json()
        if n.role == "head":
            link, age = ("UP" if self.role == "host" else "n/a"), None
            lending, resources = self.lending, self.sample
            rt = self.runtime_view() if self.role == "host" else {}
        else:
            link, age = self.beats.link(n.ip)
            beat = self.beats.beats.get(n.ip)
            lending = beat.lending if beat else {}
            resources = beat.resources if beat else {}
            rt = beat.runtime if beat else {}
        if n.state == "DEAD":
            # an old entry: its current Ray is another row
            link, age, lending, rt = "n/a", None, {}, {}
        view.update(
            link=link, last_heartbeat_s=age, lending=lending, resources=resources, runtime=rt
        )
        return view

    async def _watch_machine(self) -> None:
        """Sample this machine every second (for the nodes pane) and, on a joined node with
        the policy on, lend it only while its owner is away."""
        from .lending import Lender, Policy
        from .resources import InputIdle, InputWatcher, Sampler

        sampler = Sampler()
        watcher = InputWatcher()
        lender = Lender(Policy.from_config(self.cfg))
        policy_on = self.role == "worker" and bool(self.cfg["lending.enabled"])
        try:
            while not self._stopping.is_set():
                sampler.ray_root_pid = self.ray.pid if self.ray is not None else None
                sample = await asyncio.to_thread(sampler.sample)
                self.sample = sample.to_json()
                if policy_on:
                    idle = await asyncio.to_thread(watcher)
                    if idle.seconds is not None and idle.seconds >= self._uptime():
                        # no input since lanray-tui was started by hand: that is consent
                        idle = InputIdle(None, "", "no owner input since lanray-tui started")
                    decision = lender.step(sample, idle, self._manual)
                    if self._manual == "auto":
                        await self._follow_policy(decision.state, decision.reason)
                await asyncio.sleep(1.0)
        finally:
            watcher.close()

    def _uptime(self) -> float:
        return time.monotonic() - self.started_at

    async def _follow_policy(self, state: str, reason: str) -> None:
        lending_now = self._lending.is_set()
        if state == "lending" and not lending_now:
            log.info("lending again: %s", reason)
            self.lending = {"state": "lending", "reason": reason}
            self._lending.set()
        elif state != "lending" and lending_now:
            log.info("withholding this machine: %s", reason)
            await self._withhold(state, reason, int(self.cfg["lending.drain_deadline_s"]))
        elif state != "lending":
            self.lending = {"state": state, "reason": reason}

    async def _withhold(self, state: str, reason: str, deadline: int) -> bool:
        """Drain (no new work; running tasks get ``deadline``), then stop the worker."""
        self.lending = {"state": state, "reason": reason}
        drained = await asyncio.to_thread(self._drain_and_wait, deadline, reason)
        self._lending.clear()
        await asyncio.to_thread(self._stop_ray)
        return drained

    async def _op_heartbeat(self, req: dict[str, Any]) -> Any:
        if self.role != "host":
            raise LanrayError("heartbeats go to the host")
        self.beats.record(req)
        return {"ok": True}

    async def _heartbeat_loop(self) -> None:
        """Beat once per interval; when beats come back after the link was lost, make Ray
        rejoin at once instead of waiting for its own (slow) failure detection."""
        interval = float(self.cfg["cluster.heartbeat_interval_s"])
        missed = int(self.cfg["cluster.missed_heartbeats"])
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            beat = {
                "op": "heartbeat",
                "auth": self.creds.token,
                "node_ip": self.node_ip,
                "name": socket.gethostname(),
                "state": self.state,
                "lending": self.lending,
                "resources": self.sample,
                "runtime": self.runtime_view(),
            }
            try:
                msg = await cluster_api.request(
                    self.creds.head_address, self.cfg["cluster.api_port"], beat, interval
                )
                ok = bool(msg.get("ok"))
            except (OSError, asyncio.TimeoutError, ValueError):
                ok = False
            if ok:
                if failures >= missed:
                    log.warning("the host answers again after %d missed heartbeats", failures)
                    await self._rejoin_if_lost()
                failures, self.link = 0, "UP"
            else:
                failures += 1
                if failures == missed:
                    log.warning("lost the host: %d heartbeats unanswered", failures)
                    self.link = "LOST"
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _rejoin_if_lost(self) -> None:
        """After a cut link, Ray's worker is often already dead for the head (or will abort
        soon): if the head does not list it ALIVE, restart it now."""
        if not self._lending.is_set():
            return
        try:
            nodes = await asyncio.to_thread(self._nodes, 3.0)
            alive = any(self._is_me(n) for n in nodes)
        except LanrayError:
            alive = False
        if self.state != "ready" or not alive:
            log.warning("rejoining: restarting the Ray worker")
            self.detail = "link came back"
            self._kick.set()
            await asyncio.to_thread(self._stop_ray)

    async def _op_pause(self, req: dict[str, Any]) -> Any:
        """Withhold this machine: drain Ray (no new work; running tasks get the deadline),
        then stop the worker. The agent stays, and ``resume`` lends it again."""
        if self.role != "worker":
            raise LanrayError("pausing the host is not available yet: only joined nodes pause")
        if not self._lending.is_set():
            return {"state": "paused", "drained": False}
        reason = str(req.get("reason") or "paused by hand")
        deadline = int(req.get("deadline_s", self.cfg["lending.drain_deadline_s"]))
        self._manual = "paused"
        drained = await self._withhold("paused", reason, deadline)
        return {"state": "paused", "drained": drained}

    def _drain_and_wait(self, deadline_s: int, reason: str) -> bool:
        """Drain this node in Ray, then wait until no task runs on it or the deadline passes
        (what still runs then is retried elsewhere by Ray)."""
        try:
            node_id = next((n.node_id for n in self._nodes(5.0) if self._is_me(n)), "")
        except LanrayError:
            return False
        if not node_id or not ray_process.drain(
            self.creds.gcs_address, node_id, self.creds.token, deadline_s, reason
        ):
            return False
        end = time.monotonic() + deadline_s
        url, token = self.creds.dashboard_url, self.creds.token
        while time.monotonic() < end and self.ray is not None and self.ray.poll() is None:
            with contextlib.suppress(LanrayError):
                if ray_dashboard.running_tasks(url, token, node_id) == 0:
                    break
            time.sleep(0.5)
        return True

    def runtime_view(self) -> dict[str, Any]:
        """How Ray runs here, for the nodes pane: the runtime and, under docker, the
        container and whether it runs."""
        kind = str(self.cfg["runtime.kind"])
        view: dict[str, Any] = {"kind": kind}
        if kind == "docker":
            running = self.ray is not None and self.ray.poll() is None
            view["container"] = str(getattr(self.ray, "name", "") or "")
            view["container_state"] = (
                "running" if running else "stopped" if not self._lending.is_set() else "none"
            )
        return view

    async def _op_restart_ray(self, req: dict[str, Any]) -> Any:
        """Restart this node's Ray now (under docker: a fresh container)."""
        if not self._lending.is_set():
            raise LanrayError(
                f"Ray is stopped on this node ({self.lending.get('reason', '')}): "
                "start it first ('lanray-tui resume')"
            )
        log.info("restarting Ray by hand")
        self.detail = "restarted by hand"
        self._kick.set()
        await asyncio.to_thread(self._stop_ray)
        return {"state": "restarting"}

    async def _op_stop_ray(self, req: dict[str, Any]) -> Any:
        """Stop this node's Ray (its container, under docker) and keep the agent until
        ``resume``. A joined node drains first, as on ``pause``; on the host the head goes
        down, and with it the cluster (queued jobs wait in the queue)."""
        if not self._lending.is_set():
            return {"state": self.lending.get("state", "stopped"), "drained": False}
        self._manual = "paused"
        if self.role == "worker":
            deadline = int(req.get("deadline_s", self.cfg["lending.drain_deadline_s"]))
            drained = await self._withhold("stopped", "stopped by hand", deadline)
            return {"state": "stopped", "drained": drained}
        log.info("stopping the head by hand")
        self.lending = {"state": "stopped", "reason": "stopped by hand"}
        self._lending.clear()
        await asyncio.to_thread(self._stop_ray)
        return {"state": "stopped", "drained": False}

    async def _op_resume(self, req: dict[str, Any]) -> Any:
        if self.role != "worker" and self._lending.is_set():
            raise LanrayError("only joined nodes pause and resume")
        self._manual = "auto"
        self.lending = {"state": "lending", "reason": "resumed by hand"}
        self._lending.set()
        return {"state": "lending"}

    async def _op_token(self, req: dict[str, Any]) -> Any:
        if self.role != "host":
            raise LanrayError("only the host prints the cluster token")
        return self.creds.token

    async def _stream_logs(self, req: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        """Stream a log of this node: ``{"ok": true, "result": {"line": ...}}`` per line.

        ``source`` is ``ray`` (what Ray printed) or ``agent``; ``lines`` says how many old
        lines to send first; with ``follow`` new lines keep coming until the client goes.
        """
        source = req.get("source", "ray")
        if source not in LOG_SOURCES:
            writer.write(encode({"ok": False, "error": f"no log source '{source}'"}))
            return
        path = self.paths.ray_log if source == "ray" else self.paths.agent_log
        backlog = int(req.get("lines", 200))
        follow = bool(req.get("follow", False))
        pos = 0
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            pos = len(data)
            for raw in data.splitlines()[-backlog:] if backlog > 0 else []:
                writer.write(encode({"ok": True, "result": {"line": raw.decode(errors="replace")}}))
        await writer.drain()
        partial = b""
        while follow and not self._stopping.is_set():
            await asyncio.sleep(0.2)
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except OSError:
                continue
            pos += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            for raw in lines:
                writer.write(encode({"ok": True, "result": {"line": raw.decode(errors="replace")}}))
            await writer.drain()  # raises ConnectionError when the client went away
        writer.write(encode({"end": True}))

    async def _op_code(self, req: dict[str, Any]) -> Any:
        if self.role != "host":
            raise LanrayError("only the host has a join code")
        if self.codes is None:
            raise LanrayError("join codes are not available yet: the host is still starting")
        code = self.codes.current()
        return {
            "code": code,
            "expires_in": round(self.codes.expires_in()),
            "failures_total": self.codes.failures_total,
            "pairing": self.pairing is not None,
        }

    async def _op_leave(self, req: dict[str, Any]) -> Any:
        self.detail = "leave"
        self._stopping.set()
        return {"pid": os.getpid()}


async def _first(*aws: Awaitable[Any], timeout: float | None = None) -> None:
    """Wait until the first of ``aws`` finishes (or ``timeout``); cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def _label_value(name: str) -> str:
    """A host name as a Ray label value (letters, digits, '-', '_', '.'; at most 63)."""
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:63].strip("-_.")
    return clean or "node"
