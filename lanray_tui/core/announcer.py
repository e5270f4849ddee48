"""The host's side of discovery and pairing: beacons, answers to queries, join codes.

Beacons go out once a second to each LAN interface's broadcast address, signed with the
cluster key; a query is answered at once by unicast. With ``discovery.broadcast: false`` the
host is quiet: it sends no beacons and answers only queries sent to its own address (an ARP
scan, or a joiner that knows the address, still finds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from . import beacon as wire
from . import discovery, netinfo
from .joincode import CodeBook
from .pairing import serve_pairing

log = logging.getLogger("lanray.announcer")


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: Announcer) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        decoded = wire.decode(data, self.owner.stats)
        if decoded is None or decoded.kind != "query" or self.transport is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.transport.sendto(self.owner.packet(), addr)
        self.owner.answered += 1

    def error_received(self, exc: Exception) -> None:
        log.debug("discovery socket: %s", exc)


class Announcer:
    """Runs inside the host agent's event loop."""

    def __init__(
        self,
        port: int,
        make_beacon: Callable[[], wire.Beacon],
        key: bytes,
        broadcast: bool,
        interval_s: float,
    ) -> None:
        self.port = port
        self.make_beacon = make_beacon
        self.key = key
        self.broadcast = broadcast
        self.interval_s = interval_s
        self.stats = wire.DecodeStats()
        self.answered = 0
        self.sent = 0
        self._endpoints: list[_Endpoint] = []
        self._task: asyncio.Task[None] | None = None

    def packet(self) -> bytes:
        return wire.encode_beacon(self.make_beacon(), self.key)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        binds = ["0.0.0.0"] if self.broadcast else [i.address for i in netinfo.lan_interfaces()]
        for addr in binds:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind((addr, self.port))
            _, proto = await loop.create_datagram_endpoint(lambda: _Endpoint(self), sock=sock)
            self._endpoints.append(proto)
        if self.broadcast:
            self._task = asyncio.create_task(self._beacons())
        log.info("discovery on UDP %d (%s)", self.port, "beacons" if self.broadcast else "quiet")

    async def _beacons(self) -> None:
        while True:
            ep = self._endpoints[0]
            if ep.transport is not None:
                data = self.packet()
                for _, bcast in discovery.broadcast_targets():
                    with contextlib.suppress(OSError):
                        ep.transport.sendto(data, (bcast, self.port))
                        self.sent += 1
            await asyncio.sleep(self.interval_s)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for ep in self._endpoints:
            if ep.transport is not None:
                ep.transport.close()


class PairingService:
    """The TCP service where joiners pair with the current join code."""

    def __init__(
        self, codes: CodeBook, credentials_for: Callable[[dict[str, Any]], dict[str, Any]]
    ):
        self.codes = codes
        self.credentials_for = credentials_for
        self.paired = 0
        self._server: asyncio.Server | None = None

    async def start(self, address: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, address, port, reuse_address=True)
        log.info("pairing on TCP %s:%d", address, port)

    def _on_success(self, hello: dict[str, Any]) -> dict[str, Any]:
        self.codes.use()
        self.paired += 1
        log.info("node %r paired", hello.get("node_name"))
        return self.credentials_for(hello)

    def _on_failure(self) -> None:
        burned = self.codes.fail()
        log.warning("a pairing attempt used a wrong code%s", "; code burned" if burned else "")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_pairing(
            reader,
            writer,
            code_for_attempt=self.codes.current,
            on_success=self._on_success,
            on_failure=self._on_failure,
        )

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
