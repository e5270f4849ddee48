"""Ray's GCS asked over Ray's own gRPC (mutual TLS and the token), in a child process.

A worker has no dashboard to ask (it listens on the head's loopback only), but it reaches
the head's GCS like every Ray process of the cluster. The child loads Ray, so that the caller
(the agent) never does.

:class:`GcsSession` keeps such a child, with Ray loaded, for the calls that cannot wait for
Ray to load (seconds on a busy laptop): draining a node whose owner has just come back.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from ..core.types import LanrayError, NodeInfo
from . import ray_process

IMPORT_S = 15.0  # what loading Ray in the child may take on a busy machine


class GcsError(LanrayError):
    """The GCS could not be asked, with the reason in one line."""


def list_nodes(
    gcs_address: str, token: str, tls_env: Mapping[str, str], timeout: float = 5.0
) -> list[NodeInfo]:
    """Every node the GCS knows, dead ones included (as the dashboard's node list)."""
    argv = [sys.executable, "-m", __name__, "nodes", gcs_address, str(timeout)]
    env = ray_process.auth_env(token, tls_env)
    try:
        p = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout + IMPORT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GcsError(f"the cluster's GCS at {gcs_address} did not answer in time") from None
    except OSError as exc:
        raise GcsError(f"cannot ask the cluster's GCS: {exc}") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()]
        why = lines[-1].strip()[:300] if lines else f"exit code {p.returncode}"
        raise GcsError(f"cannot ask the cluster's GCS at {gcs_address}: {why}")
    try:
        rows = json.loads(p.stdout.strip().splitlines()[-1])
        return [NodeInfo.from_ray(r) for r in rows]
    except (ValueError, IndexError, TypeError, AttributeError):
        raise GcsError("the GCS's node list has an unexpected shape") from None


def _nodes_main(gcs_address: str, timeout: str) -> int:
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    rows: list[dict[str, Any]] = []
    for node_id, info in (
        GcsClient(address=gcs_address).get_all_node_info(timeout=float(timeout)).items()
    ):
        rows.append(
            {
                "node_id": node_id.hex(),
                "node_ip": info.node_manager_address,
                "node_name": info.node_name,
                "is_head_node": bool(info.is_head_node),
                "state": "ALIVE" if info.state == 0 else "DEAD",
                "resources_total": dict(info.resources_total),
                "labels": dict(info.labels),
            }
        )
    print(json.dumps(rows))
    return 0


class GcsSession:
    """A kept child (``python -m lanray_tui.adapters.ray_gcs serve GCS``) that has loaded
    Ray and holds a GCS client, and answers one JSON line per request line: a drain is
    then one gRPC call (milliseconds) instead of a new process that loads Ray (seconds).

    Blocking calls, one at a time (a lock): the agent runs them in threads. The child
    exits when its stdin closes (the agent is gone). :meth:`start` only spawns it; the
    first request waits until it is ready."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv, self.env = list(argv), dict(env) if env is not None else None
        self._proc: subprocess.Popen[str] | None = None
        self._ready = False
        self._lock = threading.Lock()

    @classmethod
    def for_cluster(cls, gcs_address: str, token: str, tls_env: Mapping[str, str]) -> GcsSession:
        argv = [sys.executable, "-m", __name__, "serve", gcs_address]
        return cls(argv, ray_process.auth_env(token, tls_env))

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Spawn the child if it does not run (it loads Ray meanwhile)."""
        with self._lock:
            self._spawn()

    def _spawn(self) -> None:
        if self.alive:
            return
        self.close_quietly()
        try:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,  # a Ctrl-C in the agent's terminal is the agent's
            )
        except OSError as exc:
            raise GcsError(f"cannot start the GCS helper: {exc}") from None
        self._ready = False

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``request``, return the child's answer; :class:`GcsError` on any failure
        (the child is then ended: the next call starts a fresh one)."""
        with self._lock:
            self._spawn()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            try:
                if not self._ready:
                    first = self._read(proc.stdout, IMPORT_S + timeout)
                    if not first.get("ready"):
                        raise GcsError(first.get("error") or "the GCS helper did not start")
                    self._ready = True
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                answer = self._read(proc.stdout, timeout)
            except (OSError, ValueError, GcsError) as exc:
                self.close_quietly()
                if isinstance(exc, GcsError):
                    raise
                raise GcsError(f"the GCS helper failed: {exc}") from None
            if "error" in answer:
                raise GcsError(str(answer["error"]))
            return answer

    def _read(self, out: IO[str], timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise GcsError("the GCS helper did not answer in time")
            ready, _, _ = select.select([out], [], [], left)
            if ready:
                line = out.readline()
                if not line:
                    raise GcsError("the GCS helper exited")
                answer = json.loads(line)
                if not isinstance(answer, dict):
                    raise GcsError("the GCS helper answered something unexpected")
                return answer

    def drain(self, node_id: str, deadline_s: int, reason: str, timeout: float = 10.0) -> bool:
        """Ray's drain of ``node_id`` (as ``ray drain-node --reason
        DRAIN_NODE_REASON_PREEMPTION``): True if the GCS accepted it."""
        req = {"op": "drain", "node_id": node_id, "deadline_s": deadline_s, "reason": reason}
        return bool(self.ask(req, timeout).get("accepted"))

    def close_quietly(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def close(self) -> None:
        with self._lock:
            self.close_quietly()


def _serve_main(gcs_address: str) -> int:
    """The child of :class:`GcsSession`: load Ray, then answer requests until stdin ends.
    Answers go to the original stdout; anything Ray prints goes to stderr instead."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # Loading Ray takes seconds of CPU; it is kept for later, so it yields to what runs now
    # (on a lab machine where many nodes join at once: their own Ray starts).
    with contextlib.suppress(OSError):
        os.nice(10)

    def answer_with(doc: dict[str, Any]) -> None:
        out.write(json.dumps(doc) + "\n")
        out.flush()

    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
        from ray.core.generated import autoscaler_pb2

        client = GcsClient(address=gcs_address)
        preemption = autoscaler_pb2.DrainNodeReason.Value(  # type: ignore[attr-defined]
            "DRAIN_NODE_REASON_PREEMPTION"
        )
    except Exception as exc:  # Ray's errors: one line for the parent
        answer_with({"error": _one_line(exc)})
        return 1
    answer_with({"ready": True})
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if req.get("op") == "drain":
                deadline_ms = time.time_ns() // 1_000_000 + int(req["deadline_s"]) * 1000
                accepted, why = client.drain_node(
                    str(req["node_id"]), preemption, str(req["reason"])[:200], deadline_ms
                )
                answer: dict[str, Any] = {"accepted": bool(accepted), "why": str(why or "")}
            elif req.get("op") == "ping":
                answer = {"pong": True}
            else:
                answer = {"error": f"unknown request {req.get('op')!r}"}
        except Exception as exc:
            answer = {"error": _one_line(exc)}
        answer_with(answer)
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        raise SystemExit(_serve_main(sys.argv[2]))
    if len(sys.argv) == 4 and sys.argv[1] == "nodes":
        try:
            raise SystemExit(_nodes_main(sys.argv[2], sys.argv[3]))
        except Exception as exc:  # Ray's errors: one line for the parent
            print(_one_line(exc), file=sys.stderr)
            raise SystemExit(1) from None
    print(
        "usage: python -m lanray_tui.adapters.ray_gcs nodes GCS TIMEOUT | serve GCS",
        file=sys.stderr,
    )
    raise SystemExit(2)
