"""The control server: the agent's ops on its Unix socket (this user only) and, on the host,
the cluster API on TCP for the cluster's own nodes.

Requests are the typed requests of :mod:`..protocol`, one JSON line each. A malformed one
(not JSON, not an object, ``op`` not a name, a field of the wrong type, nested too deep) gets
one ``bad request`` line and the connection stays open for the next one; a handler never
takes the agent down.

The cluster API is served over mutual TLS (the server is started with
:meth:`~..cluster_ca.NodeTls.server_context`): a peer that has no certificate of this
cluster never gets a line through, so no request carries a secret. It serves only the ops
:data:`~..protocol.REMOTE_OPS` names, with ``remote_handlers`` taking precedence for the
ops that answer a member differently from the local user (``status``); a worker forwards
the job ops to the host over the same TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from .. import protocol as p
from ..cluster_api import forward
from ..errors import LanrayError

log = logging.getLogger("lanray.agent")

Handler = Callable[[Any], Awaitable[Any]]
StreamHandler = Callable[[Any, asyncio.StreamWriter], Awaitable[None]]
TunnelHandler = Callable[[Any, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

#: The address of the member whose request is being served (cluster API only; "" locally).
PEER_IP: contextvars.ContextVar[str] = contextvars.ContextVar("peer_ip", default="")

REMOTE_READ_TIMEOUT_S = 30.0
FORWARD_TIMEOUT_S = 10.0


def _json(result: Any) -> Any:
    """A handler's result as JSON: a reply class of the protocol, or its JSON already."""
    return result.to_json() if hasattr(result, "to_json") else result


class ControlServer:
    """Dispatches requests to ``handlers`` (one reply) and ``streams`` (many replies)."""

    def __init__(
        self,
        forward_to: Callable[[], tuple[str, int]] | None = None,
        client_tls: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.forward_to = forward_to  # a worker: where the host's cluster API is
        self.client_tls = client_tls  # ...and the TLS it speaks there
        self.handlers: dict[str, Handler] = {}
        self.remote_handlers: dict[str, Handler] = {}
        self.streams: dict[str, StreamHandler] = {}
        self.tunnels: dict[str, TunnelHandler] = {}

    async def serve_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, remote=False)

    async def serve_remote(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        PEER_IP.set(str(peer[0]) if isinstance(peer, tuple) and peer else "")
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
                if not await self.handle(line, writer, remote, reader):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError, asyncio.TimeoutError):
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def handle(
        self,
        line: bytes,
        writer: asyncio.StreamWriter,
        remote: bool,
        reader: asyncio.StreamReader | None = None,
    ) -> bool:
        """Answer one request line; False when the connection is done (after a stream)."""
        try:
            req = p.parse_request(line)
        except p.ProtocolError as exc:
            writer.write(p.error_line(str(exc)))
            return True
        op = req.OP
        if op not in (p.REMOTE_OPS if remote else p.LOCAL_OPS):
            writer.write(p.error_line(f"'{op}' is not available here"))
            return True
        if not remote and self.forward_to is not None and op in p.FORWARDED_OPS:
            assert self.client_tls is not None
            host, port = self.forward_to()
            try:
                tls = self.client_tls()
            except LanrayError as exc:
                writer.write(p.error_line(str(exc)))
                return False
            await forward(host, port, req, writer, tls, FORWARD_TIMEOUT_S)
            return False
        if op in self.streams:
            await self.stream(op, req, writer)
            return False
        if op in self.tunnels and reader is not None:
            await self.tunnels[op](req, reader, writer)
            return False
        writer.write(await self.call(op, req, remote))
        return True

    async def call(self, op: str, req: Any, remote: bool = False) -> bytes:
        """The reply line for one request (never raises)."""
        handler = (self.remote_handlers.get(op) if remote else None) or self.handlers.get(op)
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
