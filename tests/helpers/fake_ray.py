"""Fakes of the outside systems the agent's parts take: a Ray process and Ray's view."""

from __future__ import annotations

import threading
from pathlib import Path

from lanray_tui.adapters.ray_process import STARTED_MARKER
from lanray_tui.core.models import NodeInfo

NODE_IP = "10.7.0.2"


class FakeRay:
    """A Ray process: runs until ``crash()`` or ``stop()``."""

    _next_pid = 5000

    def __init__(self) -> None:
        FakeRay._next_pid += 1
        self.pid = FakeRay._next_pid
        self.returncode: int | None = None
        self._done = threading.Event()
        self.stopped = False

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._done.wait(timeout if timeout is not None else 10.0)
        assert self.returncode is not None, "FakeRay.wait timed out"
        return self.returncode

    def crash(self, rc: int = 1) -> None:
        self.returncode = rc
        self._done.set()

    def stop(self) -> int | None:
        self.stopped = True
        if self.returncode is None:
            self.crash(0)
        return self.returncode


class FakeStarter:
    """``start(progress)`` for the supervisor: each start writes Ray's marker to the log."""

    def __init__(self, log: Path, fail_with: Exception | None = None, marker: bool = True) -> None:
        self.log = log
        self.fail_with = fail_with
        self.marker = marker
        self.started: list[FakeRay] = []

    def __call__(self, progress: object) -> FakeRay:
        if self.fail_with is not None:
            raise self.fail_with
        ray = FakeRay()
        with open(self.log, "a") as f:
            f.write(f"starting ray {ray.pid}\n")
            if self.marker:
                f.write(f"{STARTED_MARKER}.\n")
        self.started.append(ray)
        return ray

    @property
    def current(self) -> FakeRay:
        return self.started[-1]


class FakeRayView:
    """Ray's view: this node is ALIVE while the starter's current Ray runs."""

    def __init__(self, starter: FakeStarter, role: str = "worker", ip: str = NODE_IP) -> None:
        self.starter = starter
        self.role = role
        self.ip = ip
        self.tasks = 0
        self.drains: list[tuple[str, int, str]] = []
        self.drain_ok = True
        self.warmed = 0

    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        alive = bool(self.starter.started) and self.starter.current.poll() is None
        state = "ALIVE" if alive else "DEAD"
        return [NodeInfo("id-me", self.ip, "me", self.role, state, 1.0, 0.0, 1.0)]

    def usage(self) -> dict[str, tuple[float, float]]:
        return {"CPU": (0.5, 1.0)}

    def running_tasks(self, node_id: str) -> int:
        return self.tasks

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool:
        self.drains.append((node_id, deadline_s, reason))
        return self.drain_ok

    def warm(self) -> None:
        self.warmed += 1
