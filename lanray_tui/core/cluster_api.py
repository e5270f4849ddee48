"""The host agent's cluster API: the control protocol over TCP, for the cluster's own nodes.

Workers send heartbeats here and forward what must reach the host (the job queue). Every
request carries the cluster token (``"auth"``); one without it, or with a wrong one, is
refused, and only the operations in :data:`REMOTE_OPS` are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from .control import MAX_LINE, encode
from .errors import LanrayError

REMOTE_OPS = frozenset(
    {"heartbeat", "status", "submit", "jobs", "job", "cancel", "retry", "job_logs"}
)
#: Operations a worker's agent forwards to the host instead of answering itself.
FORWARDED_OPS = frozenset({"submit", "jobs", "job", "cancel", "retry", "job_logs"})


def authorized(req: dict[str, Any], token: str) -> bool:
    given = req.get("auth")
    return isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())


@dataclass
class Beat:
    """The last heartbeat of one worker node, as the host keeps it."""

    name: str
    node_ip: str
    received: float  # time.monotonic() on the host
    state: str = ""
    lending: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)


def _dict(value: Any) -> dict[str, Any]:
    """A field of a heartbeat that should be an object (anything else counts as empty)."""
    return dict(value) if isinstance(value, dict) else {}


class HeartbeatBook:
    """Which workers beat recently: a node is UNREACHABLE after ``missed`` silent intervals,
    long before Ray itself declares it DEAD."""

    def __init__(self, interval_s: float, missed: int) -> None:
        self.interval_s = interval_s
        self.missed = missed
        self.beats: dict[str, Beat] = {}

    def record(self, req: dict[str, Any]) -> None:
        ip = str(req.get("node_ip", ""))
        if not ip:
            raise LanrayError("heartbeat without node_ip")
        self.beats[ip] = Beat(
            name=str(req.get("name", ip))[:64],
            node_ip=ip,
            received=time.monotonic(),
            state=str(req.get("state", "")),
            lending=_dict(req.get("lending")),
            resources=_dict(req.get("resources")),
            runtime=_dict(req.get("runtime")),
        )

    def link(self, ip: str, now: float | None = None) -> tuple[str, float | None]:
        """("UP" | "UNREACHABLE" | "n/a", seconds since the last beat)."""
        beat = self.beats.get(ip)
        if beat is None:
            return "n/a", None
        age = (now if now is not None else time.monotonic()) - beat.received
        limit = self.interval_s * self.missed + self.interval_s / 2
        return ("UNREACHABLE" if age > limit else "UP"), round(age, 1)


async def request(host: str, port: int, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request to a host's cluster API; returns the reply message (raises OSError)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(encode(req))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    if not line:
        raise ConnectionError("the host closed the connection")
    msg: dict[str, Any] = json.loads(line)
    return msg


async def forward(
    host: str, port: int, req: dict[str, Any], writer: asyncio.StreamWriter, timeout: float
) -> None:
    """Relay ``req`` to the host and every reply line back to ``writer`` (streams too)."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, limit=MAX_LINE), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        writer.write(
            encode({"ok": False, "error": f"cannot reach the host at {host}:{port}: {exc}"})
        )
        return
    try:
        w.write(encode(req))
        await w.drain()
        while line := await r.readline():
            writer.write(line)
            await writer.drain()
    finally:
        w.close()
