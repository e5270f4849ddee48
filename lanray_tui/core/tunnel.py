"""Ray's dashboard from another node: a local forward over the cluster API's mutual TLS.

Ray's dashboard and Jobs API listen on the head's loopback only, so nobody on the LAN can
reach them in clear. ``lanray-tui dashboard`` on a member listens on this machine's loopback;
each browser connection becomes one ``dashboard`` request to the host agent over mutual TLS,
which the host answers with one line and then joins to its loopback dashboard port
(:func:`splice` on both ends). Ray's own token still guards the dashboard itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable

from . import protocol as p

log = logging.getLogger(__name__)

CHUNK = 1 << 16
CONNECT_TIMEOUT_S = 10.0


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways until both directions end, then close both."""
    try:
        await asyncio.gather(_copy(a[0], b[1]), _copy(b[0], a[1]))
    finally:
        for w in (a[1], b[1]):
            w.close()


async def serve_dashboard(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
) -> None:
    """The host's side of one tunnel: say yes, then join the member to the dashboard."""
    try:
        local = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_S
        )
    except (OSError, asyncio.TimeoutError) as exc:
        writer.write(p.error_line(f"Ray's dashboard does not answer on the head: {exc}"))
        return
    writer.write(p.ok_line(p.TunnelReply(port)))
    await writer.drain()
    await splice((reader, writer), local)


async def forward_dashboard(
    host: str,
    api_port: int,
    tls: ssl.SSLContext,
    local_port: int,
    on_ready: Callable[[int], None],
) -> None:
    """Listen on this machine's loopback and tunnel each connection to the head's dashboard
    (runs until cancelled). ``on_ready`` gets the local port once it listens."""

    async def one(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            hr, hw = await asyncio.wait_for(
                asyncio.open_connection(host, api_port, ssl=tls), CONNECT_TIMEOUT_S
            )
            hw.write(p.encode(p.DashboardRequest().to_json()))
            await hw.drain()
            answer = json.loads(await asyncio.wait_for(hr.readline(), CONNECT_TIMEOUT_S) or b"{}")
        except (OSError, ValueError, asyncio.TimeoutError, ssl.SSLError) as exc:
            log.warning("cannot reach the host's cluster API at %s:%d: %s", host, api_port, exc)
            w.close()
            return
        if not isinstance(answer, dict) or not answer.get("ok"):
            why = answer.get("error") if isinstance(answer, dict) else "a bad answer"
            log.warning("the host refused the dashboard tunnel: %s", why)
            hw.close()
            w.close()
            return
        await splice((r, w), (hr, hw))

    server = await asyncio.start_server(one, "127.0.0.1", local_port)
    on_ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()
