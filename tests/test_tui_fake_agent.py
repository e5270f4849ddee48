"""A small agent stand-in for the TUI tests: a real Unix socket speaking the control protocol
(one JSON line in; one JSON line out, or many for a stream ending with ``{"end": true}``).

It answers ``info``, ``status``, ``code``, ``leave``, the job ops (``jobs``, ``job``,
``submit``, ``cancel``, ``retry``) and the node ops (``pause``, ``resume``, ``restart_ray``,
``stop_ray``), and streams ``logs`` and ``job_logs``; everything it was asked is recorded in
``ops``. No Ray, no network: the socket lives in the test's
XDG_RUNTIME_DIR, so ``Paths.from_env().socket`` finds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from lanray_tui.core.control import ControlClient
from lanray_tui.core.paths import Paths, ensure_private_dir


def dead_pid() -> int:
    """The PID of a process that has exited (what `leave` waits for)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def agent_json(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pid": 4242,
        "version": "0.1.0",
        "role": "host",
        "state": "ready",
        "detail": "",
        "cluster_name": "testlab",
        "cluster_id": "c0ffee",
        "head_address": "10.9.0.1:6379",
        "node_ip": "10.9.0.1",
        "dashboard_url": "http://10.9.0.1:8265",
        "ray_version": "2.60.0",
    }
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


JOB_OPS = frozenset({"jobs", "job", "submit", "cancel", "retry"})
NODE_OPS = {
    "pause": "paused",
    "resume": "lending",
    "restart_ray": "restarting",
    "stop_ray": "stopped",
}


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


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
        self.refuse: dict[str, str] = {}  # op -> the error the agent answers with
        self.jobs: list[dict[str, Any]] = []
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
        req = json.loads(line)
        self.ops.append(req)
        op = req.get("op")
        try:
            if op in self.refuse:
                wfile.write(_encode({"ok": False, "error": self.refuse[op]}))
                wfile.flush()
                return
            if op == "logs":
                self._stream_logs(req, wfile)
                return
            if op == "job_logs":
                self._stream_job_logs(req, wfile)
                return
            if op in JOB_OPS or op in NODE_OPS:
                wfile.write(_encode(self._job_or_node_op(op, req)))
                wfile.flush()
                return
            if op == "info":
                if len(self.states) > 1:
                    self.agent["state"] = self.states.pop(0)
                elif self.states:
                    self.agent["state"] = self.states[0]
                reply: dict[str, Any] = {"ok": True, "result": self.agent}
            elif op == "status":
                reply = {
                    "ok": True,
                    "result": {"nodes": self.nodes, "agent": self.agent, "free": self.free},
                }
            elif op == "code" and self.code is not None:
                reply = {"ok": True, "result": self.code}
            elif op == "leave":
                wfile.write(_encode({"ok": True, "result": {"pid": self.agent["pid"]}}))
                wfile.flush()
                threading.Thread(target=self.stop, daemon=True).start()
                return
            else:
                reply = {"ok": False, "error": "bad request"}
            wfile.write(_encode(reply))
            wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

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

    def _job(self, job_id: Any) -> dict[str, Any] | None:
        return next((j for j in self.jobs if j["id"] == job_id), None)

    def _job_or_node_op(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        if op in NODE_OPS:
            return {"ok": True, "result": {"state": NODE_OPS[op]}}
        if op == "jobs":
            return {"ok": True, "result": {"jobs": self.jobs, "cluster_ready": True}}
        if op == "submit":
            spec = req.get("spec") or {}
            name = spec.get("name") or " ".join(spec.get("command") or [spec.get("script", "")])
            return {"ok": True, "result": self.add_job(name, submitter=req.get("submitter", ""))}
        job = self._job(req.get("id"))
        if job is None:
            return {"ok": False, "error": f"no job '{req.get('id')}' (see 'lanray-tui jobs')"}
        if op == "cancel":
            changed = job["state"] in ("QUEUED", "SUBMITTED", "RUNNING")
            if changed:
                job["state"] = "CANCELLED"
            return {"ok": True, "result": {**job, "changed": changed}}
        if op == "retry":
            job.update(state="QUEUED", attempt=job["attempt"] + 1)
        return {"ok": True, "result": job}

    def _stream_job_logs(self, req: dict[str, Any], wfile: Any) -> None:
        job = self._job(req.get("id"))
        if job is None:
            wfile.write(_encode({"ok": False, "error": f"no job '{req.get('id')}'"}))
            return
        try:
            for text in self.job_logs.get(job["id"], []):
                wfile.write(_encode({"ok": True, "result": {"line": text}}))
            wfile.write(_encode({"ok": True, "result": {"job": job}}))
            wfile.write(_encode({"end": True}))
            wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _stream_logs(self, req: dict[str, Any], wfile: Any) -> None:
        source = req.get("source", "ray")
        if source not in self.logs:
            wfile.write(_encode({"ok": False, "error": f"no log source '{source}'"}))
            return
        backlog = int(req.get("lines", 200))
        with self._cond:
            sent = len(self.logs[source])
            first = self.logs[source][max(0, sent - backlog) :] if backlog > 0 else []
        try:
            for text in first:
                wfile.write(_encode({"ok": True, "result": {"line": text}}))
            wfile.flush()
            while req.get("follow"):
                with self._cond:
                    while not self._stopping and len(self.logs[source]) == sent:
                        self._cond.wait(0.5)
                    if self._stopping:
                        break
                    new = self.logs[source][sent:]
                    sent = len(self.logs[source])
                for text in new:
                    wfile.write(_encode({"ok": True, "result": {"line": text}}))
                wfile.flush()
            wfile.write(_encode({"end": True}))
            wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass


# ----- the fake itself speaks the real protocol --------------------------------------------


def test_fake_agent_answers_the_real_client(tmp_path: Path) -> None:
    fake = FakeAgent().start()
    try:
        client = ControlClient(fake.paths.socket, timeout=5.0)
        assert client.call("info")["cluster_name"] == "testlab"
        assert len(client.call("status")["nodes"]) == 3
        lines = [item["line"] for item in client.stream("logs", source="ray", lines=1)]
        assert lines == ["ray line 2"]
        assert client.call("code")["code"] == "7-tiger-canvas"
    finally:
        fake.stop()
    assert not fake.paths.socket.exists()
    assert socket.AF_UNIX  # the fake is a Unix socket, nothing else
