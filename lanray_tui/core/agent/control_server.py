"""The control server: the agent's ops on its Unix socket (this user only) and, on the host,
the cluster API on TCP for the cluster's own nodes.

Requests are the typed requests of :mod:`..protocol`, one JSON line each. A malformed one
(not JSON, not an object, ``op`` not a name, a field of the wrong type, nested too deep) gets
one ``bad request`` line and the connection stays open for the next one; a handler never
takes the agent down. Remote requests must carry the cluster token and name an op the
cluster API serves (checked before anything else is read, so a stranger learns nothing from
the validation); a worker forwards the job ops to the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .. import protocol as p
from ..cluster_api import authorized, forward
from ..errors import LanrayError

log = logging.getLogger("lanray.agent")

Handler = Callable[[Any], Awaitable[Any]]
StreamHandler = Callable[[Any, asyncio.StreamWriter], Awaitable[None]]

REMOTE_READ_TIMEOUT_S = 30.0
FORWARD_TIMEOUT_S = 10.0


def _remote_allowed(line: bytes, token: str) -> bool:
    """A cluster-API request names an op the cluster API serves and carries the token."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict):
        return False
    op = doc.get("op")
    return isinstance(op, str) and op in p.REMOTE_OPS and authorized(doc, token)


def _json(result: Any) -> Any:
    """A handler's result as JSON: a reply class of the protocol, or its JSON already."""
    return result.to_json() if hasattr(result, "to_json") else result


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
        if remote and not _remote_allowed(line, self.token()):
            writer.write(p.error_line("not authorized"))
            return False
        try:
            req = p.parse_request(line)
        except p.ProtocolError as exc:
            writer.write(p.error_line(str(exc)))
            return True
        op = req.OP
        if not remote and self.forward_to is not None and op in p.FORWARDED_OPS:
            host, port = self.forward_to()
            await forward(host, port, req.with_auth(self.token()), writer, FORWARD_TIMEOUT_S)
            return False
        if op in self.streams:
            await self.stream(op, req, writer)
            return False
        writer.write(await self.call(op, req))
        return True

    async def call(self, op: str, req: Any) -> bytes:
        """The reply line for one request (never raises)."""
        handler = self.handlers.get(op)
        if handler is None:
            return p.error_line(f"'{op}' is not available here")
        try:
            result = await handler(req)
            return p.encode({"ok": True, "result": _json(result)})
        except LanrayError as exc:
            return p.error_line(str(exc))
        except Exception as exc:  # one bad request must not take the agent down
            log.warning("control op %s failed: %s: %s", op, type(exc).__name__, exc)
            return p.error_line(f"{op} failed: {exc}")

    async def stream(self, op: str, req: Any, writer: asyncio.StreamWriter) -> None:
        try:
            await self.streams[op](req, writer)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except LanrayError as exc:
            writer.write(p.error_line(str(exc)))
        except Exception as exc:
            log.warning("control stream %s failed: %s: %s", op, type(exc).__name__, exc)
            writer.write(p.error_line(f"{op} failed: {exc}"))
