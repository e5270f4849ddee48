"""Lending with an end time: what --until and --for accept, refuse and say."""

from __future__ import annotations

import datetime as dt

import pytest

from lanray_tui.core import lend_time
from lanray_tui.core.errors import LanrayError

NOON = dt.datetime(2026, 12, 3, 12, 0).astimezone().timestamp()


@pytest.mark.parametrize(("text", "seconds"), [("20s", 20), ("90m", 5400), ("3h", 10800),
                                               ("1h30m", 5400), ("1H5S", 3605)])  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert lend_time.parse_for(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "3", "h", "-5m", "1d", "3 h", "9999999h", "1.5h"])
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(LanrayError, match="--for"):
        lend_time.parse_for(text)


def test_until_a_clock_time_is_today_or_tomorrow() -> None:
    six = lend_time.parse_until("18:00", NOON)
    assert six - NOON == 6 * 3600
    nine = lend_time.parse_until("09:00", NOON)  # passed today: tomorrow morning
    assert nine - NOON == 21 * 3600
    assert lend_time.parse_until("2026-12-24 18:00", NOON) > six
    assert lend_time.parse_until(f"@{NOON + 20}", NOON) == NOON + 20


@pytest.mark.parametrize("text", ["25:00", "6pm", "tomorrow", "2020-01-01 10:00", "@x", "@1"])
def test_bad_times_are_one_line(text: str) -> None:
    with pytest.raises(LanrayError, match="--until"):
        lend_time.parse_until(text, NOON)


def test_until_or_for_not_both_and_described() -> None:
    with pytest.raises(LanrayError, match="not both"):
        lend_time.until_from("18:00", "3h", NOON)
    assert lend_time.until_from(None, None, NOON) is None
    assert lend_time.until_from(None, "20s", NOON) == NOON + 20
    assert lend_time.describe(NOON + 6 * 3600, NOON) == "until 18:00"
    assert lend_time.describe(NOON + 20, NOON) == "until 12:00:20"
    assert lend_time.describe(NOON + 30 * 3600, NOON) == "until Dec 04 18:00"


def test_expires_takes_a_time_or_a_duration() -> None:
    assert lend_time.parse_when("6h", NOON) == NOON + 6 * 3600
    assert lend_time.parse_when("18:00", NOON) == NOON + 6 * 3600
    with pytest.raises(LanrayError):
        lend_time.parse_when("soon", NOON)
    assert lend_time.ends_line(NOON + 2 * 3600 + 300, NOON) == (
        "the cluster ends at 14:05 (in 2 h 5 min)"
    )
    assert lend_time.ends_line(NOON + 30, NOON).endswith("(in under a minute)")
