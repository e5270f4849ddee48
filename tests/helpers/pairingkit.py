"""Helpers for the pairing tests: a real PairingService on loopback, with a real cluster CA
that signs what joiners ask, and joiners that can pick their source address (127.0.0.0/8 is
all loopback on Linux)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lanray_tui.core import joincode
from lanray_tui.core.announcer import PairingService
from lanray_tui.core.cluster_ca import NodeTls, make_csr, new_key_pem
from lanray_tui.core.joincode import CodeBook
from lanray_tui.core.pairing import _Conn, _exchange

TOKEN = "tok-5f3a9c1e7b2d4f60"
CLUSTER_KEY = "c0ffee" * 10
CREDS = {
    "cluster_id": "0123456789abcdef",
    "cluster_name": "lab",
    "token": TOKEN,
    "cluster_key": CLUSTER_KEY,
    "head_address": "127.0.0.1",
    "gcs_port": 6379,
    "dashboard_port": 8265,
}
SERVER_TIMEOUT = 0.5


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def host_tls(folder: Path) -> NodeTls:
    """A host's TLS folder with the CA of the test cluster (as the agent makes at start)."""
    tls = NodeTls(folder)
    tls.ensure_ca(str(CREDS["cluster_id"]), str(CREDS["cluster_name"]))
    return tls


@contextlib.asynccontextmanager
async def serving(
    book: CodeBook | None = None,
    creds: Callable[[dict[str, Any], bytes], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[PairingService]:
    """A PairingService on 127.0.0.1 with a fresh port, taking join codes from ``book`` and
    the token TOKEN. It answers with CREDS and a certificate its CA (``service.tls``) signs,
    unless ``creds(hello, csr)`` answers instead; ``service.hellos`` lists who paired."""
    book = book or CodeBook()
    hellos: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pairing-ca-") as folder:
        tls = host_tls(Path(folder))

        def credentials_for(hello: dict[str, Any], csr: bytes) -> dict[str, Any]:
            hellos.append(hello)
            if creds is not None:
                return creds(hello, csr)
            return {**CREDS, "cert": tls.sign(csr).decode(), "ca": tls.ca_cert.read_text()}

        kwargs.setdefault("timeout", SERVER_TIMEOUT)
        kwargs.setdefault("token", lambda: TOKEN)
        service = PairingService(book, credentials_for, **kwargs)
        service.hellos = hellos  # type: ignore[attr-defined]
        service.tls = tls  # type: ignore[attr-defined]
        await service.start("127.0.0.1", 0)
        try:
            yield service
        finally:
            service.close()
            assert service._server is not None
            await service._server.wait_closed()


def throwaway_csr(node_name: str = "worker-1", ip: str = "127.0.0.1") -> bytes:
    """A signing request for a key made now and thrown away (for tests that do not keep it)."""
    return make_csr(new_key_pem(), node_name, [ip])


def pair_from(
    port: int,
    secret: str,
    source: str = "127.0.0.1",
    node_name: str = "worker-1",
    cluster_id: str | None = None,
    timeout: float = 3.0,
    mode: str = "code",
    csr: bytes | None = None,
) -> dict[str, Any]:
    """:func:`pairing.pair` (or, with mode "token", :func:`pairing.pair_with_token`) from a
    chosen loopback source address (blocking); with no ``csr``, a throwaway one."""
    if mode == "code":
        secret = joincode.normalize(secret)
    csr = csr if csr is not None else throwaway_csr(node_name, source)
    sock = socket.socket()
    with sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        conn = _Conn(sock, time.monotonic() + timeout)
        return _exchange(conn, mode, secret, node_name, cluster_id, csr)


def paired(creds: dict[str, Any]) -> dict[str, Any]:
    """The credentials without the certificates, which must be there (PEM)."""
    assert str(creds["cert"]).startswith("-----BEGIN CERTIFICATE-----")
    assert str(creds["ca"]).startswith("-----BEGIN CERTIFICATE-----")
    return {k: v for k, v in creds.items() if k not in ("cert", "ca")}


async def pair_async(port: int, code: str, **kwargs: Any) -> dict[str, Any]:
    return await asyncio.to_thread(pair_from, port, code, **kwargs)


def wrong_code(right: str | None) -> str:
    return "1-acid-acid" if right != "1-acid-acid" else "2-acid-acid"


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


async def raw_client(port: int, payload: bytes, source: str = "127.0.0.1") -> tuple[float, bytes]:
    """Send ``payload``, then read until the server hangs up; return (seconds, reply)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await loop.sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    start = time.monotonic()
    got = bytearray()
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(payload)
            await writer.drain()
            while data := await asyncio.wait_for(reader.read(4096), SERVER_TIMEOUT + 2.0):
                got.extend(data)
        return time.monotonic() - start, bytes(got)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


FLOOD_HELLO = b'{"cluster_id":null,"mode":"code","node_name":"flood","v":3}'


def flood(port: int, attempts: int, concurrency: int) -> None:
    """``attempts`` bad attempts, ``concurrency`` at once from as many loopback addresses:
    each a fresh SPAKE2 message from the wrong side, so that each costs the host its SPAKE2
    work and is then dropped. (A random element of the right side would count as a guess when
    it happens to be in the group: the host cannot tell it from a wrong code.) Run it in a
    process of its own (``python -m tests.helpers.pairingkit PORT N C``), as an attacker
    would be."""

    def one(i: int) -> None:
        payload = frame(FLOOD_HELLO) + frame(b"B" + os.urandom(32)) + frame(os.urandom(32))
        sock = socket.socket()
        try:
            sock.settimeout(5.0)
            sock.bind((f"127.0.1.{i % concurrency + 1}", 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(payload)
            while sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            sock.close()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(attempts)))


if __name__ == "__main__":
    flood(*(int(arg) for arg in sys.argv[1:4]))
