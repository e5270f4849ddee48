"""A small agent stand-in for the TUI tests: a real Unix socket speaking the control protocol
of :mod:`lanray_tui.core.protocol` (one JSON line in; one JSON line out, or many for a stream
ending with ``{"end": true}``).

It reads every request with ``protocol.parse_request`` and builds every reply from the
protocol's reply classes, so a renamed op or field breaks it as it would break the agent.
It answers ``info``, ``status``, ``code``, ``leave``, the job ops (``jobs``, ``job``,
``submit``, ``cancel``, ``retry``) and the node ops (``pause``, ``resume``, ``restart_ray``,
``stop_ray``), and streams ``logs`` and ``job_logs``; everything it was asked is recorded in
``ops`` (each request's JSON). No Ray, no network: the socket lives in the test's
XDG_RUNTIME_DIR, so ``Paths.from_env().socket`` finds it.
"""

from __future__ import annotations

import contextlib
import os
import socketserver
import subprocess
import sys
import threading
from typing import Any

from lanray_tui.core import protocol as p
from lanray_tui.core.jobs import JobView
from lanray_tui.core.models import AgentInfo
from lanray_tui.core.paths import Paths, ensure_private_dir


def dead_pid() -> int:
    """The PID of a process that has exited (what `leave` waits for)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def agent_json(**changes: Any) -> dict[str, Any]:
    base = AgentInfo(
        pid=4242,
        version="0.1.0",
        role="host",
        state="ready",
        detail="",
        cluster_name="testlab",
        cluster_id="c0ffee",
        head_address="10.9.0.1:6379",
        node_ip="10.9.0.1",
        dashboard_url="http://10.9.0.1:8265",
        ray_version="2.60.0",
    ).to_json()
    base.update(changes)
    return base


def node_json(name: str, ip: str, role: str = "worker", state: str = "ALIVE") -> dict[str, Any]:
    return {
        "node_id": f"id-{name}",
        "ip": ip,
        "name": name,
        "role": role,
        "state": state,
        "cpus": 4.0,
        "gpus": 1.0 if role == "head" else 0.0,
        "memory_gb": 8.0,
    }


NODE_OPS = {
    p.PauseRequest: "paused",
    p.ResumeRequest: "lending",
    p.RestartRayRequest: "restarting",
    p.StopRayRequest: "stopped",
}


class FakeAgent:
    """Serve the control protocol on ``paths.socket`` from a thread until :meth:`stop`."""

    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or Paths.from_env()
        self.agent = agent_json(pid=dead_pid())
        self.nodes = [
            node_json("alpha", "10.9.0.1", role="head"),
            node_json("beta", "10.9.0.2"),
            node_json("gamma", "10.9.0.3", state="DEAD"),
        ]
        self.code: dict[str, Any] | None = {"code": "7-tiger-canvas", "expires_in": 600}
        self.logs: dict[str, list[str]] = {"ray": ["ray line 1", "ray line 2"], "agent": []}
        self.states: list[str] = []  # successive `info` states (then the last one stays)
        self.free: dict[str, float] | None = None  # what `status` says is free
        self.ends_at = 0.0  # when the host ends the cluster (host --expires)
        self.refuse: dict[str, str] = {}  # op -> the error the agent answers with
        self.jobs: list[dict[str, Any]] = []
        self.ray_metrics: dict[str, p.MetricsReply] = {}  # by job id: Ray Train/Tune results
        self.job_logs: dict[str, list[str]] = {}
        self.ops: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    # ----- driving it from a test ---------------------------------------------------------

    def push_log(self, source: str, *lines: str) -> None:
        with self._cond:
            self.logs.setdefault(source, []).extend(lines)
            self._cond.notify_all()

    def start(self) -> FakeAgent:
        ensure_private_dir(self.paths.runtime_dir)
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                fake._handle(self.rfile, self.wfile)

        server = socketserver.ThreadingUnixStreamServer(str(self.paths.socket), Handler)
        server.daemon_threads = True
        os.chmod(self.paths.socket, 0o600)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()

    def ops_named(self, op: str) -> list[dict[str, Any]]:
        return [o for o in self.ops if o.get("op") == op]

    # ----- the protocol -------------------------------------------------------------------

    def _handle(self, rfile: Any, wfile: Any) -> None:
        line = rfile.readline()
        if not line:
            return
        try:
            req = p.parse_request(line)
        except p.ProtocolError as exc:
            self._send(wfile, p.error_line(str(exc)))
            return
        self.ops.append(req.to_json())
        try:
            if req.OP in self.refuse:
                self._send(wfile, p.error_line(self.refuse[req.OP]))
            elif isinstance(req, p.LogsRequest):
                self._stream_logs(req, wfile)
            elif isinstance(req, p.JobLogsRequest):
                self._stream_job_logs(req, wfile)
            elif isinstance(req, p.LeaveRequest):
                self._send(wfile, p.ok_line(p.LeaveReply(pid=self.agent["pid"])))
                threading.Thread(target=self.stop, daemon=True).start()
            else:
                self._send(wfile, self._answer(req))
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _send(wfile: Any, line: bytes) -> None:
        wfile.write(line)
        wfile.flush()

    def _answer(self, req: p.Request[Any]) -> bytes:
        """The one reply line to a request that is not a stream."""
        if isinstance(req, p.InfoRequest):
            if len(self.states) > 1:
                self.agent["state"] = self.states.pop(0)
            elif self.states:
                self.agent["state"] = self.states[0]
            return p.ok_line(AgentInfo.from_json(self.agent))
        if isinstance(req, p.StatusRequest):
            agent = AgentInfo.from_json(self.agent)
            return p.ok_line(
                p.StatusReply(nodes=self.nodes, agent=agent, free=self.free, ends_at=self.ends_at)
            )
        if isinstance(req, p.CodeRequest) and self.code is not None:
            return p.ok_line(
                p.CodeReply(code=self.code["code"], expires_in=self.code["expires_in"])
            )
        if type(req) in NODE_OPS:
            return p.ok_line(p.LendingReply(state=NODE_OPS[type(req)]))
        if isinstance(req, p.JobsRequest):
            return p.ok_line(p.JobsReply(jobs=[JobView.from_json(j) for j in self.jobs]))
        if isinstance(req, p.SubmitRequest):
            spec = req.spec
            name = spec.name or " ".join(spec.command or [spec.script])
            job = self.add_job(name, submitter=req.submitter)
            return p.ok_line(JobView.from_json(job))
        if isinstance(req, (p.JobRequest, p.CancelRequest, p.RetryRequest)):
            return self._job_op(req)
        if isinstance(req, p.MetricsRequest):
            return p.ok_line(self.ray_metrics.get(req.id, p.MetricsReply({})))
        return p.error_line(f"'{req.OP}' is not available here")

    def add_job(self, name: str, state: str = "QUEUED", **fields: Any) -> dict[str, Any]:
        job = {
            "id": f"j-{len(self.jobs) + 1:04x}",
            "name": name,
            "state": state,
            "priority": 0,
            "entrypoint": f"python {name}.py",
            "submitter": "me@alpha",
            "created": 1_000.0,
            "started": None,
            "ended": None,
            "exit_code": None,
            "message": "",
            "attempt": 1,
            "num_cpus": None,
            "num_gpus": None,
            "node": "",
        }
        job.update(fields)
        self.jobs.append(job)
        return job

    def _job(self, job_id: str) -> dict[str, Any] | None:
        return next((j for j in self.jobs if j["id"] == job_id), None)

    def _job_op(self, req: p.JobRequest | p.CancelRequest | p.RetryRequest) -> bytes:
        job = self._job(req.id)
        if job is None:
            return p.error_line(f"no job '{req.id}' (see 'lanray-tui jobs')")
        if isinstance(req, p.CancelRequest):
            changed = job["state"] in ("QUEUED", "SUBMITTED", "RUNNING")
            if changed:
                job["state"] = "CANCELLED"
            return p.ok_line(p.CancelReply(job=JobView.from_json(job), changed=changed))
        if isinstance(req, p.RetryRequest):
            job.update(state="QUEUED", attempt=job["attempt"] + 1)
        return p.ok_line(JobView.from_json(job))

    def _stream_job_logs(self, req: p.JobLogsRequest, wfile: Any) -> None:
        job = self._job(req.id)
        if job is None:
            self._send(wfile, p.error_line(f"no job '{req.id}'"))
            return
        try:
            for text in self.job_logs.get(req.id, []):
                wfile.write(p.ok_line(p.JobLogItem(line=text)))
            wfile.write(p.ok_line(p.JobLogItem(job=JobView.from_json(job))))
            self._send(wfile, p.END_LINE)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _stream_logs(self, req: p.LogsRequest, wfile: Any) -> None:
        source = req.source
        if source not in self.logs:
            self._send(wfile, p.error_line(f"no log source '{source}'"))
            return
        backlog = req.lines
        with self._cond:
            sent = len(self.logs[source])
            first = self.logs[source][max(0, sent - backlog) :] if backlog > 0 else []
        try:
            for text in first:
                wfile.write(p.ok_line(p.LogLine(text)))
            wfile.flush()
            while req.follow:
                with self._cond:
                    while not self._stopping and len(self.logs[source]) == sent:
                        self._cond.wait(0.5)
                    if self._stopping:
                        break
                    new = self.logs[source][sent:]
                    sent = len(self.logs[source])
                for text in new:
                    wfile.write(p.ok_line(p.LogLine(text)))
                wfile.flush()
            self._send(wfile, p.END_LINE)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass


# ----- the fake itself speaks the real protocol --------------------------------------------
