"""The control server: the agent's ops on its Unix socket (this user only) and, on the host,
the cluster API on TCP for the cluster's own nodes.

Requests are newline-delimited JSON (:mod:`..control`). A malformed request (not JSON, not an
object, ``op`` not a name, nested too deep) gets one ``bad request`` line and the connection
stays open for the next one; a handler never takes the agent down. Remote requests must carry
the cluster token and name an op the cluster API serves; a worker forwards the job ops to the
host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..cluster_api import FORWARDED_OPS, REMOTE_OPS, authorized, forward
from ..control import encode
from ..errors import LanrayError

log = logging.getLogger("lanray.agent")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
StreamHandler = Callable[[dict[str, Any], asyncio.StreamWriter], Awaitable[None]]

REMOTE_READ_TIMEOUT_S = 30.0
FORWARD_TIMEOUT_S = 10.0
BAD_REQUEST = "bad request"


class BadRequest(ValueError):
    pass


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """``(op, request)`` from one line, or :class:`BadRequest`."""
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        raise BadRequest(BAD_REQUEST) from None
    if not isinstance(req, dict):
        raise BadRequest(BAD_REQUEST)
    op = req.get("op")
    if not isinstance(op, str) or not op or len(op) > 64:
        raise BadRequest(BAD_REQUEST)
    return op, req


class ControlServer:
    """Dispatches requests to ``handlers`` (one reply) and ``streams`` (many replies)."""

    def __init__(
        self,
        token: Callable[[], str],
        forward_to: Callable[[], tuple[str, int]] | None = None,
    ) -> None:
        self.token = token
        self.forward_to = forward_to  # a worker: where the host's cluster API is
        self.handlers: dict[str, Handler] = {}
        self.streams: dict[str, StreamHandler] = {}

    async def serve_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, remote=False)

    async def serve_remote(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve(reader, writer, remote=True)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: bool
    ) -> None:
        try:
            while True:
                timeout = REMOTE_READ_TIMEOUT_S if remote else None
                line = await asyncio.wait_for(reader.readline(), timeout)
                if not line:
                    return
                if not await self.handle(line, writer, remote):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError, asyncio.TimeoutError):
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def handle(self, line: bytes, writer: asyncio.StreamWriter, remote: bool) -> bool:
        """Answer one request line; False when the connection is done (after a stream)."""
        try:
            op, req = parse_request(line)
        except BadRequest:
            writer.write(encode({"ok": False, "error": BAD_REQUEST}))
            return True
        if remote and not (op in REMOTE_OPS and authorized(req, self.token())):
            writer.write(encode({"ok": False, "error": "not authorized"}))
            return False
        if not remote and self.forward_to is not None and op in FORWARDED_OPS:
            host, port = self.forward_to()
            await forward(host, port, {**req, "auth": self.token()}, writer, FORWARD_TIMEOUT_S)
            return False
        if op in self.streams:
            await self.stream(op, req, writer)
            return False
        writer.write(encode(await self.call(op, req)))
        return True

    async def call(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        """The reply message for one request (never raises)."""
        handler = self.handlers.get(op)
        if handler is None:
            return {"ok": False, "error": f"'{op}' is not available here"}
        try:
            return {"ok": True, "result": await handler(req)}
        except LanrayError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # one bad request must not take the agent down
            log.warning("control op %s failed: %s: %s", op, type(exc).__name__, exc)
            return {"ok": False, "error": f"{op} failed: {exc}"}

    async def stream(self, op: str, req: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        try:
            await self.streams[op](req, writer)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except LanrayError as exc:
            writer.write(encode({"ok": False, "error": str(exc)}))
        except Exception as exc:
            log.warning("control stream %s failed: %s: %s", op, type(exc).__name__, exc)
            writer.write(encode({"ok": False, "error": f"{op} failed: {exc}"}))
