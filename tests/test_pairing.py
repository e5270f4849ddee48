"""Join codes and SPAKE2 pairing, over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from lanray_tui.core import joincode
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.joincode import CodeBook, is_valid, new_code, normalize
from lanray_tui.core.pairing import PairingError, pair, serve_pairing

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

# ------------------------------------------------------------------------------- joincode


def test_new_code_format() -> None:
    for _ in range(200):
        code = new_code()
        number, first, second = code.split("-")
        assert 1 <= int(number) <= 99
        assert first in joincode.WORDS and second in joincode.WORDS
        assert is_valid(code)
        assert normalize(code) == code


def test_word_list() -> None:
    assert len(joincode.WORDS) == 256
    assert len(set(joincode.WORDS)) == 256
    assert all(re.fullmatch(r"[a-z]{3,8}", word) for word in joincode.WORDS)


def test_normalize_and_is_valid() -> None:
    assert normalize("  7 Tiger_Canvas ") == "7-tiger-canvas"
    assert normalize("07--tiger  canvas") == "7-tiger-canvas"
    assert is_valid("7 TIGER canvas")
    assert is_valid("99-zebra-acid")
    for bad in ("", "0-tiger-canvas", "100-tiger-canvas", "7-tiger", "7-tiger-canvas-x",
                "7-tiger-notaword", "tiger-canvas-7", "7-tig3r-canvas"):  # fmt: skip
        assert not is_valid(bad), bad


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_codebook_expires() -> None:
    clock = FakeClock()
    book = CodeBook(ttl_s=600, clock=clock)
    first = book.current()
    assert book.expires_in() == 600
    clock.now += 599
    assert book.current() == first
    assert book.expires_in() == pytest.approx(1)
    clock.now += 1
    assert book.expires_in() == 0
    second = book.current()
    assert is_valid(second)
    assert book.expires_in() == 600


def test_codebook_max_uses() -> None:
    book = CodeBook(max_uses=2, clock=FakeClock())
    first = book.current()
    book.use()
    assert book.current() == first
    book.use()
    assert book.current() != first


def test_codebook_burns_after_failures() -> None:
    book = CodeBook(max_failures=3, clock=FakeClock())
    first = book.current()
    assert book.fail() is False
    assert book.fail() is False
    assert book.current() == first
    assert book.fail() is True
    assert book.current() != first
    assert book.failures_total == 3
    # The count starts over for the new code.
    assert book.fail() is False
    assert book.failures_total == 4


# -------------------------------------------------------------------------------- pairing


@dataclass
class Host:
    port: int
    book: CodeBook
    results: list[bool] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)

    async def wait_results(self, n: int) -> None:
        for _ in range(200):
            if len(self.results) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"server finished {len(self.results)} of {n} connections")


@contextlib.asynccontextmanager
async def pairing_host(
    book: CodeBook | None = None,
    code_for_attempt: Callable[[], str] | None = None,
    creds: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> AsyncIterator[Host]:
    book = book or CodeBook()

    def on_success(hello: dict[str, Any]) -> dict[str, Any]:
        host.hellos.append(hello)
        book.use()
        return creds(hello) if creds else dict(CREDS)

    def on_failure() -> None:
        book.fail()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ok = await serve_pairing(
            reader,
            writer,
            code_for_attempt=code_for_attempt or book.current,
            on_success=on_success,
            on_failure=on_failure,
            timeout=SERVER_TIMEOUT,
        )
        host.results.append(ok)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host = Host(server.sockets[0].getsockname()[1], book)
    try:
        yield host
    finally:
        server.close()
        await server.wait_closed()


async def pair_in_thread(port: int, code: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("node_name", "worker-1")
    kwargs.setdefault("timeout", 3.0)
    return await asyncio.to_thread(pair, "127.0.0.1", port, code, **kwargs)


async def test_right_code_gets_credentials() -> None:
    async with pairing_host() as host:
        code = host.book.current()
        creds = await pair_in_thread(host.port, code.upper().replace("-", " "))
        assert creds == CREDS
        await host.wait_results(1)
    assert host.results == [True]
    assert host.hellos == [{"v": 1, "cluster_id": None, "node_name": "worker-1"}]
    assert host.book.failures_total == 0


async def test_cluster_id_is_sent_and_checked() -> None:
    async with pairing_host() as host:
        creds = await pair_in_thread(host.port, host.book.current(), cluster_id=CREDS["cluster_id"])
        assert creds == CREDS
        with pytest.raises(PairingError, match="different cluster"):
            await pair_in_thread(host.port, host.book.current(), cluster_id="ffff" * 4)
        await host.wait_results(2)
    assert host.hellos[0]["cluster_id"] == CREDS["cluster_id"]


async def test_wrong_code_is_refused_and_counted() -> None:
    async with pairing_host() as host:
        right = host.book.current()
        wrong = "1-acid-acid" if right != "1-acid-acid" else "2-acid-acid"
        with pytest.raises(PairingError) as info:
            await pair_in_thread(host.port, wrong)
        assert str(info.value) == "wrong join code"
        assert isinstance(info.value, LanrayError)
        await host.wait_results(1)
    assert host.results == [False]
    assert host.book.failures_total == 1
    assert host.book.current() == right


async def test_three_wrong_codes_burn_the_code() -> None:
    async with pairing_host(CodeBook(max_failures=3)) as host:
        old = host.book.current()
        wrong = "1-acid-acid" if old != "1-acid-acid" else "2-acid-acid"
        for _ in range(3):
            with pytest.raises(PairingError, match="wrong join code"):
                await pair_in_thread(host.port, wrong)
        with pytest.raises(PairingError, match="wrong join code"):
            await pair_in_thread(host.port, old)
        await host.wait_results(4)
        assert host.book.current() != old
        # The new code works.
        assert await pair_in_thread(host.port, host.book.current()) == CREDS


async def test_code_burned_during_the_attempt_is_refused() -> None:
    # Parallel guesses all start from one code; once it is burned, none may succeed with it.
    book = CodeBook()
    codes = [book.current(), new_code()]

    def code_for_attempt() -> str:
        return codes.pop(0) if len(codes) > 1 else codes[0]

    async with pairing_host(book, code_for_attempt=code_for_attempt) as host:
        with pytest.raises(PairingError, match="expired"):
            await pair_in_thread(host.port, book.current())
        await host.wait_results(1)
    assert host.results == [False]
    assert host.hellos == []


async def test_host_error_in_callback_is_reported() -> None:
    def broken(hello: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("no token available")

    async with pairing_host(creds=broken) as host:
        with pytest.raises(PairingError, match="host refused pairing: host could not issue"):
            await pair_in_thread(host.port, host.book.current())
        await host.wait_results(1)
    assert host.results == [False]


async def test_wire_never_carries_code_or_token() -> None:
    captured = bytearray()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                captured.extend(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    async with pairing_host() as host:
        code = host.book.current()

        async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", host.port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        relay = await asyncio.start_server(proxy, "127.0.0.1", 0)
        relay_port = relay.sockets[0].getsockname()[1]
        try:
            assert await pair_in_thread(relay_port, code) == CREDS
            with pytest.raises(PairingError, match="wrong join code"):
                await pair_in_thread(
                    relay_port, "1-acid-acid" if code != "1-acid-acid" else "2-acid-acid"
                )
        finally:
            relay.close()
            await relay.wait_closed()
        await host.wait_results(2)

    wire = bytes(captured)
    assert len(wire) > 200
    for secret in (code, *code.split("-")[1:], TOKEN, CLUSTER_KEY, "cluster_key", "token"):
        assert secret.encode() not in wire, secret


async def raw_client(port: int, payload: bytes) -> float:
    """Send ``payload``, then wait for the server to hang up; return how long that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        writer.write(payload)
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            while await asyncio.wait_for(reader.read(4096), SERVER_TIMEOUT + 2.0):
                pass
        return time.monotonic() - start
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


async def test_garbage_clients_do_not_hurt_the_server() -> None:
    hello = b'{"v":1,"cluster_id":null,"node_name":"x"}'
    payloads = [
        os.urandom(1000),
        b"\xff\xff\xff\xff" + os.urandom(100),  # length prefix far over 64 KiB
        b"",  # silent client
        b"\x00\x00\x00\x05{}{}{",  # not a hello
        frame(b'{"v":2,"cluster_id":null,"node_name":"x"}'),  # unknown version
        frame(hello) + frame(os.urandom(33)),  # not a SPAKE2 message
        frame(hello) + frame(b"abc"),
        frame(hello),  # then silence
    ]
    async with pairing_host() as host:
        took = await asyncio.gather(*(raw_client(host.port, p) for p in payloads))
        assert max(took) < SERVER_TIMEOUT + 0.5
        await host.wait_results(len(payloads))
        assert host.results == [False] * len(payloads)
        # Still serving, and nobody guessed: no failure counted for garbage.
        assert await pair_in_thread(host.port, host.book.current()) == CREDS
    assert host.book.failures_total == 0


async def test_pair_times_out_on_a_silent_host() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        start = time.monotonic()
        with pytest.raises(PairingError, match="pairing timed out"):
            await pair_in_thread(port, new_code(), timeout=0.3)
        assert time.monotonic() - start < 2.0
    finally:
        server.close()
        await server.wait_closed()


async def test_pair_reports_closed_connection() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(rude, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(PairingError, match=r"closed the connection|failed"):
            await pair_in_thread(port, new_code())
    finally:
        server.close()
        await server.wait_closed()


def test_pair_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PairingError, match="refused"):
        pair("127.0.0.1", port, new_code(), node_name="w", timeout=2.0)


def test_pair_rejects_malformed_code_without_connecting() -> None:
    # Port 9 on loopback: nothing is sent, because the code is checked first.
    with pytest.raises(PairingError, match="not a join code"):
        pair("127.0.0.1", 9, "tiger canvas", node_name="w")
    with pytest.raises(PairingError, match="node name"):
        pair("127.0.0.1", 9, new_code(), node_name="bad\nname")


def test_pairing_errors_are_one_line() -> None:
    with pytest.raises(PairingError) as info:
        pair("127.0.0.1", 9, "x\ny", node_name="w")
    assert "\n" not in str(info.value)
