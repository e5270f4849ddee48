"""The host's side of discovery and pairing: beacons, answers to queries, join codes.

Beacons go out once a second to each LAN interface's broadcast address, signed with the
cluster key; a query is answered at once by unicast. With ``discovery.broadcast: false`` the
host is quiet: it sends no beacons and answers only queries sent to its own address (an ARP
scan, or a joiner that knows the address, still finds it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar, cast

from . import beacon as wire
from . import discovery, netinfo
from .joincode import CodeBook, describe_failures
from .pairing import OnSuccess, ReplayGuard, TokenGuard, serve_pairing

log = logging.getLogger("lanray.announcer")
T = TypeVar("T")


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
    """The TCP service where joiners pair with the live join code, or with the cluster token
    (``token()``; scripts), and get a certificate signed for their key.

    It closes at once any connection past ``max_connections`` (or ``per_source_connections``
    from one address), and refuses as soon as the hello has come, with no SPAKE2 work, a code
    attempt that :meth:`CodeBook.refusal` refuses (no live code, a spent budget, a source over
    its limit) or a token attempt that :class:`TokenGuard` refuses. The SPAKE2
    arithmetic runs in a thread pool of its own, never on the loop. One thread: SPAKE2 is pure
    Python, so each more thread only makes the loop wait longer for the GIL (a flood of 500
    bad attempts on 2 cores: tick delay p99 about 45 ms with one thread, 150 ms with two).
    """

    def __init__(
        self,
        codes: CodeBook,
        credentials_for: OnSuccess,
        *,
        token: Callable[[], str] | None = None,
        max_connections: int = 16,
        per_source_connections: int = 4,
        workers: int = 1,
        timeout: float = 10.0,
    ) -> None:
        self.codes = codes
        self.credentials_for = credentials_for
        self.token = token
        self.tokens = TokenGuard()
        self.max_connections = max_connections
        self.per_source_connections = per_source_connections
        self.timeout = timeout
        self.paired = 0
        self.refused = 0  # connections refused before any SPAKE2 work
        self.dropped = 0  # connections closed at once: over the connection cap
        self.port = 0
        self.replay = ReplayGuard()
        self._workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._open: dict[str, int] = {}
        self._server: asyncio.Server | None = None

    async def start(self, address: str, port: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._workers, thread_name_prefix="pairing"
        )
        self._server = await asyncio.start_server(self._serve, address, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("pairing on TCP %s:%d", address, self.port)

    def open_connections(self) -> int:
        return sum(self._open.values())

    def summary(self) -> dict[str, Any]:
        """:meth:`CodeBook.summary` and this service's counts: the ``code`` reply and the
        pairing part of ``status``."""
        codes = self.codes.summary()
        failed = {f["source"]: int(f["count"]) for f in codes["pairing_failures"]}
        for f in self.tokens.failures_by_source():
            failed[f["source"]] = failed.get(f["source"], 0) + int(f["count"])
        ranked = sorted(failed.items(), key=lambda item: (-item[1], item[0]))
        return {
            **codes,
            # the owner's line counts wrong tokens too; failures_total stays the code's budget
            "pairing_summary": describe_failures([{"source": s, "count": n} for s, n in ranked]),
            "token_failures_total": self.tokens.failures_total,
            "paired": self.paired,
            "refused_connections": self.refused,
            "dropped_connections": self.dropped,
            "replays": self.replay.replays,
        }

    def _on_success(self, hello: dict[str, Any], csr_pem: bytes) -> dict[str, Any]:
        credentials = self.credentials_for(hello, csr_pem)
        self.paired += 1
        log.info("node %r paired (%s)", hello.get("node_name"), hello.get("mode"))
        return credentials

    def _on_refused(self) -> None:
        self.refused += 1

    async def _spake(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if (
            self.open_connections() >= self.max_connections
            or self._open.get(source, 0) >= self.per_source_connections
        ):
            self.dropped += 1
            writer.transport.abort()
            return
        self._open[source] = self._open.get(source, 0) + 1
        try:
            before = self.codes.failures_total, self.tokens.failures_total
            await serve_pairing(
                reader,
                writer,
                book=self.codes,
                source=source,
                on_success=self._on_success,
                replay=self.replay,
                run_blocking=self._spake,
                token=self.token,
                tokens=self.tokens,
                on_refused=self._on_refused,
                timeout=self.timeout,
            )
            if self.codes.failures_total > before[0]:
                log.warning("pairing: %s", describe_failures(self.codes.failures_by_source()))
            if self.tokens.failures_total > before[1]:
                log.warning(
                    "pairing: wrong token from %s: %s",
                    source,
                    describe_failures(self.tokens.failures_by_source()),
                )
        finally:
            self._open[source] -= 1
            if not self._open[source]:
                del self._open[source]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
