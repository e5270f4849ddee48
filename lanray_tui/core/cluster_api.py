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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import LanrayError
from .protocol import (
    FORWARDED_OPS,
    MAX_LINE,
    REMOTE_OPS,
    HeartbeatRequest,
    ProtocolError,
    Request,
    encode,
    error_line,
    parse_reply,
)

__all__ = ["FORWARDED_OPS", "REMOTE_OPS", "HeartbeatBook", "ask", "authorized", "forward"]

T = TypeVar("T")


def authorized(req: Request[Any] | Mapping[str, Any], token: str) -> bool:
    """Whether ``req`` carries the cluster token."""
    given = req.auth if isinstance(req, Request) else req.get("auth")
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


class HeartbeatBook:
    """Which workers beat recently: a node is UNREACHABLE after ``missed`` silent intervals,
    long before Ray itself declares it DEAD."""

    def __init__(self, interval_s: float, missed: int) -> None:
        self.interval_s = interval_s
        self.missed = missed
        self.beats: dict[str, Beat] = {}

    def record(self, req: HeartbeatRequest | Mapping[str, Any]) -> None:
        """Keep a worker's beat (a typed request, or its JSON: validated here)."""
        if not isinstance(req, HeartbeatRequest):
            req = HeartbeatRequest.from_json({**req, "op": HeartbeatRequest.OP})
        ip = req.node_ip
        if not ip:
            raise LanrayError("heartbeat without node_ip")
        self.beats[ip] = Beat(
            name=(req.name or ip)[:64],
            node_ip=ip,
            received=time.monotonic(),
            state=req.state,
            lending=dict(req.lending),
            resources=dict(req.resources),
            runtime=dict(req.runtime),
        )

    def link(self, ip: str, now: float | None = None) -> tuple[str, float | None]:
        """("UP" | "UNREACHABLE" | "n/a", seconds since the last beat)."""
        beat = self.beats.get(ip)
        if beat is None:
            return "n/a", None
        age = (now if now is not None else time.monotonic()) - beat.received
        limit = self.interval_s * self.missed + self.interval_s / 2
        return ("UNREACHABLE" if age > limit else "UP"), round(age, 1)


async def request(
    host: str, port: int, req: Request[Any] | dict[str, Any], timeout: float
) -> dict[str, Any]:
    """One request to a host's cluster API; returns the reply message (raises OSError)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(encode(req.to_json() if isinstance(req, Request) else req))
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


async def ask(host: str, port: int, req: Request[T], timeout: float) -> T:
    """One request to a host's cluster API, its reply read into its class.

    Raises OSError or asyncio.TimeoutError when the host cannot be reached, ProtocolError
    for a bad reply and LanrayError with the host's one line when it refuses."""
    msg = await request(host, port, req, timeout)
    if not isinstance(msg, dict):
        raise ProtocolError(f"the host sent a bad reply to '{req.OP}'")
    if not msg.get("ok"):
        raise LanrayError(str(msg.get("error", "unknown error")))
    reply: T = parse_reply(req.OP, msg.get("result"))
    return reply


async def forward(
    host: str,
    port: int,
    req: Request[Any] | dict[str, Any],
    writer: asyncio.StreamWriter,
    timeout: float,
) -> None:
    """Relay ``req`` to the host and every reply line back to ``writer`` (streams too)."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, limit=MAX_LINE), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        writer.write(error_line(f"cannot reach the host at {host}:{port}: {exc}"))
        return
    try:
        w.write(encode(req.to_json() if isinstance(req, Request) else req))
        await w.drain()
        while line := await r.readline():
            writer.write(line)
            await writer.drain()
    finally:
        w.close()
