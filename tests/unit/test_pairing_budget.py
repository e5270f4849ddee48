"""The host-wide pairing budget (fake clock), the `code` op's request, and a flood on the
pairing port that must not delay the event loop."""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.core.errors import LanrayError
from lanray_tui.core.joincode import (
    CODE_SPACE,
    Budget,
    CodeBook,
    CodeRequest,
    CodeState,
    describe_failures,
)
from lanray_tui.core.pairing import PairingError
from tests.helpers.pairingkit import CREDS, FakeClock, pair_async, paired, serving, wrong_code

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------ the arithmetic


def test_backoff_doubles_past_the_soft_budget() -> None:
    budget = Budget()
    assert [budget.shut_after(n) for n in range(1, 9)] == [0, 0, 0, 0, 1, 2, 4, 8]
    assert budget.max_failures_within(0) == 5  # five at once, then backoff
    assert budget.max_failures_within(1) == 6
    # the k-th failure can come at 2**(k-5) - 1 s: 16 fit in an hour, 20 is the hard stop
    assert budget.max_failures_within(3600) == 16
    assert budget.max_failures_within(10**9) == 20
    with pytest.raises(ValueError):
        Budget(soft=21, hard=20)


def test_guessing_takes_years() -> None:
    # What the README states: even if the owner issued a fresh code every hour for an
    # attacker with unlimited addresses, each hour gives 16 guesses at a fresh random code.
    assert CODE_SPACE == 6_488_064
    per_hour = Budget().max_failures_within(3600)
    years = CODE_SPACE / per_hour / (24 * 365)
    assert 40 < years < 50


# ----------------------------------------------------------------------------- the book


def test_failures_from_every_source_share_one_budget() -> None:
    clock = FakeClock()
    book = CodeBook(ttl_s=10**6, clock=clock)  # soft 5, hard 20, 3 per source, 1 s at first
    code = book.issue()
    sources = [f"10.0.0.{i}" for i in range(1, 8)]  # 7 addresses x 3 = 21 > 20
    failures = 0
    for source in sources:
        for _ in range(3):
            if failures == 20:
                break
            assert book.refusal(source) is None, failures
            book.fail(source)
            failures += 1
            if failures < 5:
                assert book.refusal("10.9.9.9") is None  # no backoff yet
            elif failures < 20:
                wait = 2.0 ** (failures - 5)
                refusal = book.refusal("10.9.9.9")
                assert (
                    refusal == f"pairing is paused after failed attempts: try again in {wait:.0f} s"
                )
                end = clock.now + wait
                clock.now = end - 0.01
                assert book.refusal("10.9.9.9") is not None  # still shut just before the end
                clock.now = end
    assert failures == 20
    # Locked: nobody pairs, not even with the right code from a clean address, and the host
    # screen's renewal does not reopen it.
    assert book.state() is CodeState.LOCKED
    assert book.live() is None and book.show() is None
    assert book.refusal("10.9.9.9") == (
        "pairing is locked after too many failed attempts: ask the host for a new code"
    )
    clock.now += 10**6
    assert book.state() is CodeState.LOCKED
    # The owner's new code reopens it, with the budget and every address's count started over.
    new = book.request()
    assert new != code and book.live() == new
    assert book.refusal(sources[0]) is None and book.refusal("10.9.9.9") is None
    # ... but the report of who failed stays.
    assert book.failures_total == 20
    assert book.failures_by_source()[0] == {"source": "10.0.0.1", "count": 3}
    assert sum(f["count"] for f in book.failures_by_source()) == 20


def test_each_source_has_its_own_limit() -> None:
    book = CodeBook(clock=FakeClock(), budget=Budget(soft=100, hard=200, per_source=3))
    book.issue()
    for _ in range(3):
        assert book.refusal("10.0.0.9") is None
        book.fail("10.0.0.9")
    assert book.refusal("10.0.0.9") == (
        "too many failed attempts from this address: ask the host for a new code"
    )
    assert book.refusal("10.0.0.8") is None
    book.show()  # the host screen's renewal does not forgive it ...
    assert book.refusal("10.0.0.9") is not None
    book.issue()  # ... the owner's new code does
    assert book.refusal("10.0.0.9") is None


def test_successes_do_not_refill_the_budget() -> None:
    clock = FakeClock()
    book = CodeBook(clock=clock, budget=Budget(soft=2, hard=4, per_source=10))
    book.issue(uses=30, ttl_s=1800)
    for _ in range(3):
        book.use()
        book.fail("10.0.0.9")
        clock.now += 60
    book.use()
    book.fail("10.0.0.9")
    assert book.state() is CodeState.LOCKED


def test_max_failures_is_the_per_source_limit() -> None:
    # The agent builds its book with the config's pairing.max_failures.
    assert CodeBook(max_failures=7).budget == Budget(per_source=7)


def test_the_failure_report() -> None:
    assert describe_failures([]) == ""
    assert describe_failures([{"source": "10.0.0.9", "count": 1}]) == (
        "1 failed pairing attempt from 10.0.0.9"
    )
    assert describe_failures([{"source": "10.0.0.9", "count": 3}]) == (
        "3 failed pairing attempts from 10.0.0.9"
    )
    many = [{"source": f"10.0.0.{i}", "count": 6 - i} for i in range(1, 6)]
    assert describe_failures(many) == (
        "15 failed pairing attempts from 10.0.0.1, 10.0.0.2, 10.0.0.3 and 2 more"
    )
    book = CodeBook(clock=FakeClock())
    book.issue()
    for source in ("10.0.0.7", "10.0.0.9", "10.0.0.9"):
        book.fail(source)
    summary = book.summary()
    assert summary["pairing_failures"] == [
        {"source": "10.0.0.9", "count": 2},
        {"source": "10.0.0.7", "count": 1},
    ]
    assert summary["pairing_summary"] == "3 failed pairing attempts from 10.0.0.9, 10.0.0.7"
    assert summary["state"] == "live" and summary["failures_total"] == 3


def test_the_report_is_bounded() -> None:
    book = CodeBook(clock=FakeClock(), budget=Budget(soft=1000, hard=1000))
    book.issue()
    for i in range(300):
        book.fail(f"10.0.{i // 256}.{i % 256}")
    report = book.failures_by_source()
    assert len(report) == 257
    assert report[0] == {"source": "other addresses", "count": 44}


# ------------------------------------------------------------------------- the code op


def test_code_request_from_json() -> None:
    assert CodeRequest.from_json({"op": "code"}) == CodeRequest()
    req = CodeRequest.from_json({"op": "code", "uses": 30, "minutes": 30, "open": True})
    assert req == CodeRequest(open=True, uses=30, minutes=30)
    assert CodeRequest.from_json(req.to_json()) == req
    assert CodeRequest(close=True).to_json() == {"close": True}
    for bad, msg in [
        ({"uses": 0}, "--uses"),
        ({"uses": 1001}, "--uses"),
        ({"uses": "3"}, "--uses"),
        ({"uses": True}, "--uses"),
        ({"uses": 2.5}, "--uses"),
        ({"minutes": 0.5}, "--minutes"),
        ({"minutes": 1441}, "--minutes"),
        ({"minutes": "30"}, "--minutes"),
        ({"close": "yes"}, "true or false"),
        ({"close": True, "uses": 3}, "--close takes no"),
    ]:
        with pytest.raises(LanrayError, match=msg):
            CodeRequest.from_json(bad)


def test_code_op_answers() -> None:
    clock = FakeClock()
    book = CodeBook(ttl_s=600, max_uses=5, clock=clock)
    # The host screen's poll: a code, renewed once expired.
    shown = book.answer(CodeRequest())
    assert shown["code"] and shown["expires_in"] == 600 and shown["uses_left"] == 5
    assert book.answer(CodeRequest())["code"] == shown["code"]
    # code --uses 30 --minutes 30: a new code for a lab session.
    lab = book.answer(CodeRequest(uses=30, minutes=30))
    assert lab["code"] != shown["code"]
    assert (lab["expires_in"], lab["uses_left"], lab["state"]) == (1800, 30, "live")
    # code --close, then the host screen's poll: closed stays closed.
    closed = book.answer(CodeRequest(close=True))
    assert (closed["code"], closed["state"], closed["expires_in"]) == ("", "closed", 0)
    assert book.answer(CodeRequest())["code"] == ""
    # plain `lanray-tui code` (open): reopens with the default limits.
    opened = book.answer(CodeRequest(open=True))
    assert opened["code"] and opened["uses_left"] == 5 and opened["state"] == "live"


# --------------------------------------------------------------- over TCP, with the budget


async def test_after_the_budget_even_the_right_code_is_refused() -> None:
    clock = FakeClock()
    book = CodeBook(ttl_s=10**6, clock=clock, budget=Budget(soft=2, hard=4, per_source=2))
    async with serving(book) as service:
        code = book.issue()
        for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):
            with pytest.raises(PairingError, match="wrong join code"):
                await pair_async(service.port, wrong_code(code), source=source)
            clock.now += 3600  # past any backoff window
        with pytest.raises(PairingError, match="pairing is locked after too many failed"):
            await pair_async(service.port, code, source="127.0.0.4")
        assert service.summary()["pairing_summary"] == (
            "4 failed pairing attempts from 127.0.0.2, 127.0.0.3"
        )
        new = book.request()
        assert paired(await pair_async(service.port, new, source="127.0.0.4")) == CREDS


async def test_backoff_refuses_even_the_right_code() -> None:
    clock = FakeClock()
    book = CodeBook(clock=clock, budget=Budget(soft=1, hard=10, per_source=5, backoff_s=60))
    async with serving(book) as service:
        code = book.issue()
        with pytest.raises(PairingError, match="wrong join code"):
            await pair_async(service.port, wrong_code(code), source="127.0.0.2")
        with pytest.raises(PairingError, match="paused after failed attempts: try again in 60 s"):
            await pair_async(service.port, code, source="127.0.0.3")
        clock.now += 60
        assert paired(await pair_async(service.port, code, source="127.0.0.3")) == CREDS


async def test_parallel_attempts_cannot_pass_the_per_source_limit() -> None:
    book = CodeBook(budget=Budget(soft=100, hard=100, per_source=3))
    async with serving(book, per_source_connections=8) as service:
        code = book.issue()
        results = await asyncio.gather(
            *(pair_async(service.port, wrong_code(code), source="127.0.0.2") for _ in range(8)),
            return_exceptions=True,
        )
        assert all(isinstance(r, PairingError) for r in results)
        errors = sorted(str(r) for r in results)
        assert errors.count("wrong join code") == 3, errors
        assert book.failures_total == 3


# ------------------------------------------------------------------------------ the flood

FLOOD = 500
TICK_S = 0.01


async def tick_delays(stop: asyncio.Event) -> list[float]:
    """What a heartbeat loop sees: how late each TICK_S sleep wakes, in seconds."""
    delays = []
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK_S)
        delays.append(time.perf_counter() - start - TICK_S)
    return delays


def p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * 0.99))]


async def test_a_flood_does_not_delay_the_event_loop() -> None:
    async with serving(CodeBook()) as service:
        code = service.codes.issue()
        spake_work = 0
        threads: set[int] = set()
        real = service._spake

        async def counting(fn: Any) -> Any:
            nonlocal spake_work
            spake_work += 1

            def recorded() -> Any:
                threads.add(threading.get_ident())
                return fn()

            return await real(recorded)

        service._spake = counting  # type: ignore[method-assign]
        stop = asyncio.Event()
        ticker = asyncio.create_task(tick_delays(stop))
        started = time.monotonic()
        # 12 at a time: under every cap, so that each attempt costs the host SPAKE2 work.
        argv = [
            sys.executable,
            "-m",
            "tests.helpers.pairingkit",
            str(service.port),
            str(FLOOD),
            "12",
        ]
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT)
        assert await proc.wait() == 0
        took = time.monotonic() - started
        stop.set()
        delays = await ticker
        worst = p99(delays)
        print(
            f"\nflood: {FLOOD} attempts in {took:.1f} s, {spake_work} with SPAKE2 work, "
            f"{service.dropped} dropped at the cap; tick delay p50 "
            f"{statistics.median(delays) * 1000:.1f} ms, p99 {worst * 1000:.1f} ms, "
            f"max {max(delays) * 1000:.1f} ms"
        )
        assert spake_work >= FLOOD * 0.9  # the flood did reach the SPAKE2 work ...
        assert threading.get_ident() not in threads  # ... and it ran off the event loop
        assert worst < 0.5
        # Nothing of it counted, and the owner's code still pairs.
        assert service.codes.failures_total == 0
        assert paired(await pair_async(service.port, code)) == CREDS
