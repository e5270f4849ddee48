"""The host agent's cluster API: the control protocol over mutual TLS, for the cluster's nodes.

Workers send heartbeats here and forward what must reach the host (the job queue). Both
sides show a certificate of the cluster's CA (:mod:`.cluster_api` takes the TLS contexts of
:class:`~.cluster_ca.NodeTls`): a peer without one never gets to send a line, nothing
secret is in any message, and a recorded connection cannot be replayed (each TLS session
has fresh keys). Only the operations in :data:`REMOTE_OPS` are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Mapping
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

__all__ = [
    "FORWARDED_OPS",
    "REMOTE_OPS",
    "HeartbeatBook",
    "Link",
    "ask",
    "ask_blocking",
    "forward",
]

T = TypeVar("T")


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


def _line(req: Request[Any] | dict[str, Any]) -> bytes:
    return encode(req.to_json() if isinstance(req, Request) else req)


async def request(
    host: str, port: int, req: Request[Any] | dict[str, Any], tls: ssl.SSLContext, timeout: float
) -> dict[str, Any]:
    """One request to a host's cluster API; returns the reply message (raises OSError,
    :class:`ssl.SSLError` among them, when the host is not this cluster's)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=tls, limit=MAX_LINE), timeout
    )
    try:
        writer.write(_line(req))
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


async def ask(host: str, port: int, req: Request[T], tls: ssl.SSLContext, timeout: float) -> T:
    """One request to a host's cluster API, its reply read into its class.

    Raises OSError or asyncio.TimeoutError when the host cannot be reached, ProtocolError
    for a bad reply and LanrayError with the host's one line when it refuses."""
    return _reply(req, await request(host, port, req, tls, timeout))


def ask_blocking(host: str, port: int, req: Request[T], tls: ssl.SSLContext, timeout: float) -> T:
    """:func:`ask` for a thread (the agent's blocking parts run in threads)."""
    with (
        socket.create_connection((host, port), timeout) as raw,
        tls.wrap_socket(raw, server_hostname=host) as conn,
    ):
        conn.sendall(_line(req))
        line = conn.makefile("rb").readline(MAX_LINE)
    if not line:
        raise ConnectionError("the host closed the connection")
    return _reply(req, json.loads(line))


def _reply(req: Request[T], msg: Any) -> T:
    if not isinstance(msg, dict):
        raise ProtocolError(f"the host sent a bad reply to '{req.OP}'")
    if not msg.get("ok"):
        raise LanrayError(str(msg.get("error", "unknown error")))
    reply: T = parse_reply(req.OP, msg.get("result"))
    return reply


class Link:
    """One connection to the host's cluster API, kept open between requests (a worker's
    heartbeats: one TLS handshake per connection, not one per beat).

    A request on a kept connection that turns out dead (the host restarted, or closed it
    while idle) is sent once more on a fresh one; any other failure closes the connection
    and raises as :func:`ask` does, and the next request opens a new one. Requests from
    several tasks (the heartbeats, the start gate's) take turns: one line out, its reply
    back, then the next."""

    def __init__(
        self, address: Callable[[], tuple[str, int]], tls: Callable[[], ssl.SSLContext]
    ) -> None:
        self.address = address
        self.tls = tls
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.connects = 0
        self._turn = asyncio.Lock()

    async def ask(self, req: Request[T], timeout: float) -> T:
        await asyncio.wait_for(self._turn.acquire(), timeout)
        try:
            return await self._ask(req, timeout)
        finally:
            self._turn.release()

    async def _ask(self, req: Request[T], timeout: float) -> T:
        kept = self._conn is not None
        try:
            return await self._ask_once(req, timeout)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not kept:
                raise
        return await self._ask_once(req, timeout)

    async def _ask_once(self, req: Request[T], timeout: float) -> T:
        if self._conn is None:
            host, port = self.address()
            self._conn = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self.tls(), limit=MAX_LINE), timeout
            )
            self.connects += 1
        reader, writer = self._conn
        try:
            writer.write(_line(req))
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                raise ConnectionError("the host closed the connection")
            return _reply(req, json.loads(line))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


async def forward(
    host: str,
    port: int,
    req: Request[Any] | dict[str, Any],
    writer: asyncio.StreamWriter,
    tls: ssl.SSLContext,
    timeout: float,
) -> None:
    """Relay ``req`` to the host and every reply line back to ``writer`` (streams too)."""
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, limit=MAX_LINE), timeout
        )
    except (OSError, asyncio.TimeoutError) as exc:
        writer.write(error_line(f"cannot reach the host at {host}:{port}: {exc}"))
        return
    try:
        w.write(_line(req))
        await w.drain()
        while line := await r.readline():
            writer.write(line)
            await writer.drain()
    finally:
        w.close()
