"""Join codes and SPAKE2 pairing, over real TCP on 127.0.0.1 (the budget: test_pairing_budget)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from typing import Any

import pytest
from spake2 import SPAKE2_A

from lanray_tui.core import joincode, pairing
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.joincode import CodeBook, is_valid, new_code, normalize
from lanray_tui.core.pairing import PairingError, pair
from tests.helpers.pairingkit import (
    CLUSTER_KEY,
    CREDS,
    SERVER_TIMEOUT,
    TOKEN,
    FakeClock,
    frame,
    pair_async,
    paired,
    raw_client,
    serving,
    throwaway_csr,
    wrong_code,
)

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


def test_a_code_lives_for_its_ttl() -> None:
    clock = FakeClock()
    book = CodeBook(ttl_s=600, clock=clock)
    assert book.live() is None  # nothing is live until a code is issued
    assert book.expires_in() == 0
    first = book.issue()
    assert book.live() == first and book.expires_in() == 600
    clock.now += 599
    assert book.live() == first
    assert book.expires_in() == pytest.approx(1)
    clock.now += 1
    assert book.live() is None and book.expires_in() == 0
    assert book.state() is joincode.CodeState.IDLE
    # Only the host screen renews an expired code by itself.
    second = book.show()
    assert second is not None and is_valid(second) and book.live() == second
    assert book.expires_in() == 600


def test_a_code_is_used_up() -> None:
    book = CodeBook(max_uses=2, clock=FakeClock())
    first = book.issue()
    book.use()
    assert book.live() == first and book.uses_left() == 1
    book.use()
    assert book.live() is None
    assert book.show() not in (None, first)


def test_issue_with_uses_and_minutes_for_a_lab_session() -> None:
    clock = FakeClock()
    book = CodeBook(ttl_s=600, max_uses=5, clock=clock)
    code = book.issue(uses=30, ttl_s=30 * 60)
    for _ in range(29):
        book.use()
    assert book.live() == code and book.uses_left() == 1
    clock.now += 29 * 60
    assert book.live() == code
    clock.now += 60
    assert book.live() is None


def test_close_and_reopen() -> None:
    book = CodeBook(clock=FakeClock())
    code = book.issue()
    book.close()
    assert book.live() is None and book.state() is joincode.CodeState.CLOSED
    assert book.show() is None  # the host screen does not reopen what the owner closed
    assert book.current() == ""
    assert book.refusal("10.0.0.9") is not None
    reopened = book.request()  # the owner's `lanray-tui code`
    assert reopened != code and book.live() == reopened
    assert book.request() == reopened  # a live code is given again, not replaced


def test_wrong_guesses_do_not_burn_the_code() -> None:
    book = CodeBook(clock=FakeClock())
    code = book.issue()
    for _ in range(3):
        book.fail("10.0.0.9")
    assert book.live() == code
    assert book.refusal("10.0.0.9") is not None
    assert book.refusal("10.0.0.7") is None
    assert book.failures_total == 3


# -------------------------------------------------------------------------------- pairing


async def wait_for(pred: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


async def test_right_code_gets_credentials() -> None:
    async with serving() as service:
        code = service.codes.issue()
        creds = await pair_async(service.port, normalize(code.upper().replace("-", " ")))
        assert paired(creds) == CREDS
        # and with pair() itself, as the CLI calls it
        creds = await asyncio.to_thread(
            pair,
            "127.0.0.1",
            service.port,
            code.upper().replace("-", " "),
            node_name="w2",
            csr=throwaway_csr("w2"),
        )
        assert paired(creds) == CREDS
    assert service.hellos == [  # type: ignore[attr-defined]
        {"v": 3, "mode": "code", "cluster_id": None, "node_name": "worker-1"},
        {"v": 3, "mode": "code", "cluster_id": None, "node_name": "w2"},
    ]
    assert service.paired == 2 and service.codes.failures_total == 0
    assert service.codes.uses_left() == 3


async def test_cluster_id_is_sent_and_checked() -> None:
    async with serving() as service:
        code = service.codes.issue()
        creds = await pair_async(service.port, code, cluster_id=CREDS["cluster_id"])
        assert paired(creds) == CREDS
        with pytest.raises(PairingError, match="different cluster"):
            await pair_async(service.port, code, cluster_id="ffff" * 4)
    assert service.hellos[0]["cluster_id"] == CREDS["cluster_id"]  # type: ignore[attr-defined]


async def test_wrong_code_is_refused_and_counted_against_its_source() -> None:
    async with serving() as service:
        right = service.codes.issue()
        for _ in range(3):
            with pytest.raises(PairingError) as info:
                await pair_async(service.port, wrong_code(right), source="127.0.0.9")
            assert str(info.value) == "wrong join code"
            assert isinstance(info.value, LanrayError)
        assert service.codes.failures_total == 3
        # That address is shut out, even with the right code, and refused before SPAKE2 ...
        with pytest.raises(PairingError, match="too many failed attempts from this address"):
            await pair_async(service.port, right, source="127.0.0.9")
        assert service.refused == 1
        # ... but the code is not burned: everyone else still pairs with it.
        assert paired(await pair_async(service.port, right, source="127.0.0.1")) == CREDS
        assert service.codes.failures_by_source() == [{"source": "127.0.0.9", "count": 3}]
        assert service.summary()["pairing_summary"] == "3 failed pairing attempts from 127.0.0.9"
        # A new code from the owner lets that address try again.
        new = service.codes.issue()
        assert paired(await pair_async(service.port, new, source="127.0.0.9")) == CREDS


async def test_no_live_code_refuses_at_once_without_spake2() -> None:
    clock = FakeClock()
    async with serving(CodeBook(clock=clock)) as service:
        spake_calls = 0
        real = service._spake

        async def counting(fn: Any) -> Any:
            nonlocal spake_calls
            spake_calls += 1
            return await real(fn)

        service._spake = counting  # type: ignore[method-assign]
        for setup in ("never issued", "closed", "expired"):
            if setup == "closed":
                code = service.codes.issue()
                service.codes.close()
            elif setup == "expired":
                code = service.codes.issue()
                clock.now += 600
            else:
                code = new_code()
            start = time.monotonic()
            with pytest.raises(PairingError, match="pairing is closed: no join code is live"):
                await pair_async(service.port, code)
            assert time.monotonic() - start < 0.5, setup
        assert spake_calls == 0
        assert service.refused == 3
        code = service.codes.issue()
        assert paired(await pair_async(service.port, code)) == CREDS
        assert spake_calls == 1


async def test_code_replaced_during_the_attempt_is_refused() -> None:
    # Parallel attempts all start from one code; once the owner replaced it, none may pair.
    class Swapping(CodeBook):
        def refusal(self, source: str) -> str | None:
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 2:  # the check just before the tag is compared
                self.issue()
            return super().refusal(source)

    async with serving(Swapping()) as service:
        code = service.codes.issue()
        with pytest.raises(PairingError, match="expired"):
            await pair_async(service.port, code)
    assert service.hellos == []  # type: ignore[attr-defined]
    assert service.codes.failures_total == 0


async def test_host_error_in_callback_is_reported() -> None:
    def broken(hello: dict[str, Any], csr: bytes) -> dict[str, Any]:
        raise RuntimeError("no token available")

    async with serving(creds=broken) as service:
        code = service.codes.issue()
        with pytest.raises(PairingError, match="host refused pairing: host could not issue"):
            await pair_async(service.port, code)


async def test_wire_never_carries_code_or_token() -> None:
    captured = bytearray()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                captured.extend(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    async with serving() as service:
        code = service.codes.issue()

        async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", service.port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        relay = await asyncio.start_server(proxy, "127.0.0.1", 0)
        relay_port = relay.sockets[0].getsockname()[1]
        try:
            assert paired(await pair_async(relay_port, code)) == CREDS
            with pytest.raises(PairingError, match="wrong join code"):
                await pair_async(relay_port, wrong_code(code))
        finally:
            relay.close()
            await relay.wait_closed()

    wire = bytes(captured)
    assert len(wire) > 200
    for secret in (code, *code.split("-")[1:], TOKEN, CLUSTER_KEY, "cluster_key", "token"):
        assert secret.encode() not in wire, secret


HELLO = b'{"cluster_id":null,"mode":"code","node_name":"x","v":3}'


def spake_a(code: str) -> bytes:
    return SPAKE2_A(code.encode(), idA=pairing._ID_JOINER, idB=pairing._ID_HOST).start()


async def test_replayed_and_malformed_exchanges_cost_nothing() -> None:
    async with serving() as service:
        code = service.codes.issue()
        fresh = spake_a(wrong_code(code))
        # A full, fresh exchange with a wrong tag is a guess: it counts.
        _, reply = await raw_client(service.port, frame(HELLO) + frame(fresh) + frame(b"t" * 32))
        assert b"wrong code" in reply
        assert service.codes.failures_total == 1
        # The same SPAKE2 message again is a replay: dropped before any SPAKE2 work, whatever
        # tag follows, and from any address.
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"):
            _, reply = await raw_client(
                service.port, frame(HELLO) + frame(fresh) + frame(b"t" * 32), source
            )
            assert b"wrong code" not in reply
        assert service.replay.replays == 4
        # Malformed: a tag of the wrong size, a message of the wrong size or not in the group.
        for payload in (
            frame(HELLO) + frame(spake_a(code)) + frame(b"t" * 31),
            frame(HELLO) + frame(spake_a(code)) + frame(b"t" * 33),
            frame(HELLO) + frame(b"A" + os.urandom(32)) + frame(b"t" * 32),
            frame(HELLO) + frame(b"B" + os.urandom(32)) + frame(b"t" * 32),
            frame(HELLO) + frame(os.urandom(34)) + frame(b"t" * 32),
            frame(HELLO) + frame(spake_a(code)),  # hangs up before its tag
        ):
            _, reply = await raw_client(service.port, payload, "127.0.0.5")
            assert b"wrong code" not in reply
        assert service.codes.failures_total == 1
        assert service.codes.live() == code
        assert paired(await pair_async(service.port, code, source="127.0.0.5")) == CREDS


async def test_an_old_joiner_is_told_to_upgrade() -> None:
    async with serving() as service:
        service.codes.issue()
        _, reply = await raw_client(
            service.port, frame(b'{"cluster_id":null,"node_name":"x","v":2}')
        )
        with pytest.raises(PairingError, match="unsupported pairing version"):
            pairing._raise_if_refused(reply[4:])
        assert service.codes.failures_total == 0


async def test_connections_are_capped() -> None:
    async with serving(max_connections=4, per_source_connections=2) as service:
        service.codes.issue()
        held = []
        for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3"):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", service.port))
            held.append(sock)
        await wait_for(lambda: service.open_connections() == 4)
        # past the cap for all, or for one source: closed at once
        for source in ("127.0.0.4", "127.0.0.1"):
            took, reply = await raw_client(service.port, frame(HELLO), source)
            assert reply == b"" and took < 0.3
        assert service.dropped == 2
        for sock in held:
            sock.close()
        await wait_for(lambda: service.open_connections() == 0)
        assert paired(await pair_async(service.port, service.codes.live() or "")) == CREDS


async def test_garbage_clients_do_not_hurt_the_server() -> None:
    hello = b'{"v":3,"mode":"code","cluster_id":null,"node_name":"x"}'
    payloads = [
        os.urandom(1000),
        b"\xff\xff\xff\xff" + os.urandom(100),  # length prefix far over 64 KiB
        b"",  # silent client
        b"\x00\x00\x00\x05{}{}{",  # not a hello
        frame(b'{"v":4,"mode":"code","cluster_id":null,"node_name":"x"}'),  # unknown version
        frame(b'{"v":3,"mode":"magic","cluster_id":null,"node_name":"x"}'),  # unknown mode
        frame(hello) + frame(os.urandom(33)),  # not a SPAKE2 message
        frame(hello) + frame(b"abc"),
        frame(hello),  # then silence
    ]
    async with serving(per_source_connections=len(payloads)) as service:
        code = service.codes.issue()
        took = await asyncio.gather(*(raw_client(service.port, p) for p in payloads))
        assert max(t for t, _ in took) < SERVER_TIMEOUT + 0.5
        await wait_for(lambda: service.open_connections() == 0)
        # Still serving, and nobody guessed: no failure counted for garbage.
        assert paired(await pair_async(service.port, code)) == CREDS
    assert service.codes.failures_total == 0


async def pair_in_thread(port: int, code: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("node_name", "worker-1")
    kwargs.setdefault("timeout", 3.0)
    kwargs.setdefault("csr", throwaway_csr())
    return await asyncio.to_thread(pair, "127.0.0.1", port, code, **kwargs)


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
        pair("127.0.0.1", port, new_code(), node_name="w", csr=throwaway_csr(), timeout=2.0)


def test_pair_rejects_malformed_code_without_connecting() -> None:
    # Port 9 on loopback: nothing is sent, because the code is checked first.
    csr = throwaway_csr()
    with pytest.raises(PairingError, match="not a join code"):
        pair("127.0.0.1", 9, "tiger canvas", node_name="w", csr=csr)
    with pytest.raises(PairingError, match="node name"):
        pair("127.0.0.1", 9, new_code(), node_name="bad\nname", csr=csr)
    with pytest.raises(PairingError, match="not a PEM certificate request"):
        pair("127.0.0.1", 9, new_code(), node_name="w", csr=b"hello")


def test_pairing_errors_are_one_line() -> None:
    with pytest.raises(PairingError) as info:
        pair("127.0.0.1", 9, "x\ny", node_name="w", csr=throwaway_csr())
    assert "\n" not in str(info.value)
