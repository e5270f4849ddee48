"""The log pane's buffer without Textual: bounded ring, drop count, filter, wrap, feed."""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lanray_tui.core.log_buffer import (
    LogBuffer,
    cell_len,
    char_cells,
    chop_cells,
    clean_line,
    rows_for,
    stamp_label,
)
from lanray_tui.core.log_feed import FEED_HIGH_WATER, LogFeed

# Plain text, the needles below, wide and combining characters, tabs and escape codes.
CHARS = st.one_of(
    st.sampled_from([*"abc xyzERROR", "界", "é", "e\u0301", "\t", "\x1b[31m", "\x07"]),
    st.characters(codec="utf-8"),
)
LINES = st.lists(CHARS, max_size=30).map("".join)
NEEDLES = st.sampled_from(["", "a", "err", "ERR", "Err", "界", "x y"])
# Lines that the needles find often, and long ones, so that drops, matches and wraps mix.
FAMILIAR = st.sampled_from(["a", "b", "Err a", "error", "ERR", "界界界 a", "x" * 13, "\ta"])
SOME_LINES = st.one_of(FAMILIAR, FAMILIAR, LINES)


def cells(text: str) -> int:
    return sum(map(char_cells, text))


def matches(needle: str, line: str) -> bool:
    """The filter's rule: case-insensitive when the needle is all lower case."""
    return needle in (line.lower() if needle == needle.lower() else line)


def view_lines(buf: LogBuffer) -> list[str]:
    return [buf.line(buf.view_seq(i)) for i in range(buf.match_count)]


def entry_rows(buf: LogBuffer) -> dict[int, tuple[int, int]]:
    """Line number -> (first row, rows) for each line in the view."""
    starts = [buf.row_of_entry(i) for i in range(buf.match_count)] + [buf.view_rows()]
    return {buf.view_seq(i): (starts[i], starts[i + 1] - starts[i]) for i in range(len(starts) - 1)}


def check(buf: LogBuffer, appended: list[tuple[str, float]]) -> None:
    """Everything the buffer promises, against the plain list of what was appended."""
    kept = appended[len(appended) - buf.kept :]
    assert buf.kept <= buf.capacity
    assert buf.dropped + buf.kept == buf.total == len(appended)
    assert buf.kept == min(len(appended), buf.capacity)
    assert buf.kept_lines() == [text for text, _ in kept]
    assert [buf.stamp(buf.first + i) for i in range(buf.kept)] == [s for _, s in kept]
    shown = [text for text, _ in kept if not buf.filter_text or matches(buf.filter_text, text)]
    assert view_lines(buf) == shown

    width = buf.wrap_width
    rows = 0
    for i in range(buf.match_count):
        seq = buf.view_seq(i)
        assert buf.row_of_entry(i) == rows == buf.row_of_seq(seq)
        assert buf.seq_at_row(rows) == seq
        pieces = []
        while True:
            found = buf.row_text(rows)
            if found is None or found[0] != seq:
                break
            assert found[1] == len(pieces)
            pieces.append(found[2])
            rows += 1
        assert "".join(pieces) == clean_line(buf.line(seq))
        if width:
            assert all(cells(p) <= width or len(p) == 1 for p in pieces)
        else:
            assert len(pieces) == 1
    assert rows == buf.view_rows()
    assert buf.row_text(rows) is None
    if not buf.match_count:
        assert buf.seq_at_row(0) is None


# ----- wrapping one line --------------------------------------------------------------------


@given(LINES, st.integers(1, 30))
def test_chopped_pieces_fit_and_join_back(text: str, width: int) -> None:
    pieces = chop_cells(text, width)
    assert "".join(pieces) == text
    assert sum(map(cell_len, pieces)) == cell_len(text)
    assert all(pieces)
    # Only a character wider than the whole width may stand alone in a wider piece.
    assert all(cells(p) <= width or (len(p) == 1 and cells(p) > width) for p in pieces)
    if width >= 2:
        assert all(cells(p) <= width for p in pieces)


@given(LINES, st.integers(1, 30))
def test_rows_for_counts_the_pieces_drawn(text: str, width: int) -> None:
    assert rows_for(text, width) == max(1, len(chop_cells(clean_line(text), width)))


@given(LINES)
def test_cleaned_lines_have_no_control_characters(text: str) -> None:
    assert not re.search(r"[\x00-\x1f\x7f]", clean_line(text))


def test_wide_characters_wrap_on_their_own_boundaries() -> None:
    assert chop_cells("界" * 6, 10) == ["界" * 5, "界"]
    assert chop_cells("aa界界", 3) == ["aa", "界", "界"]  # 6 cells, yet three rows
    assert rows_for("aa界界", 3) == 3
    assert chop_cells("e\u0301" * 3, 2) == ["e\u0301e\u0301", "e\u0301"]  # accents take no cell
    assert chop_cells("", 5) == []
    assert rows_for("", 5) == 1


# ----- the buffer under any sequence of changes ----------------------------------------------


class BufferMachine(RuleBasedStateMachine):
    """Appends, filters, wrap widths and clears in any order; :func:`check` after each."""

    @initialize(capacity=st.integers(1, 10))
    def start(self, capacity: int) -> None:
        self.buf = LogBuffer(capacity)
        self.appended: list[tuple[str, float]] = []

    @rule(batch=st.lists(SOME_LINES, max_size=5))
    def append(self, batch: list[str]) -> None:
        buf = self.buf
        before = entry_rows(buf)
        stamps = [float(len(self.appended) + i) for i in range(len(batch))]
        gone = buf.append(batch, stamps)
        self.appended += zip(batch, stamps, strict=True)
        # The rows that left the top are those of the lines dropped; the lines still in
        # view moved up by that much.
        assert gone == sum(rows for seq, (_, rows) in before.items() if seq < buf.first)
        for seq, (row, _) in entry_rows(buf).items():
            if seq in before:
                assert row == before[seq][0] - gone

    @rule(needle=NEEDLES)
    def set_filter(self, needle: str) -> None:
        self.buf.set_filter(needle)

    @rule(width=st.sampled_from([0, 0, 1, 2, 3, 5, 8]))
    def set_wrap_width(self, width: int) -> None:
        self.buf.set_wrap_width(width)
        assert self.buf.wrap == (width > 0)

    @rule()
    def clear(self) -> None:
        self.buf.clear()
        self.appended = []

    @invariant()
    def keeps_its_promises(self) -> None:
        check(self.buf, self.appended)


TestBufferMachine = BufferMachine.TestCase
TestBufferMachine.settings = settings(max_examples=80, stateful_step_count=20, deadline=None)


@given(
    st.integers(1, 50),
    st.lists(st.lists(LINES, max_size=30), max_size=6),
    NEEDLES,
    st.integers(0, 9),
)
@settings(max_examples=50, deadline=None)
def test_a_filter_set_before_the_lines_finds_what_one_set_after_does(
    capacity: int, batches: list[list[str]], needle: str, width: int
) -> None:
    early, late = LogBuffer(capacity), LogBuffer(capacity)
    early.set_filter(needle)
    early.set_wrap_width(width)
    for batch in batches:
        early.append(batch, [0.0] * len(batch))
        late.append(batch, [0.0] * len(batch))
    late.set_filter(needle)
    late.set_wrap_width(width)
    assert view_lines(early) == view_lines(late)
    assert early.view_rows() == late.view_rows()
    assert [early.row_text(r) for r in range(early.view_rows())] == [
        late.row_text(r) for r in range(late.view_rows())
    ]


# ----- examples -----------------------------------------------------------------------------


def test_a_long_stream_is_bounded_and_its_bookkeeping_stays_right() -> None:
    buf = LogBuffer(100)
    buf.set_filter("7")
    buf.set_wrap_width(4)
    appended: list[tuple[str, float]] = []
    for start in range(0, 30_000, 250):  # enough to compact the filter and wrap bookkeeping
        batch = [f"line {i}" for i in range(start, start + 250)]
        buf.append(batch, [1.0] * 250)
        appended += [(text, 1.0) for text in batch]
    assert (buf.kept, buf.dropped) == (100, 29_900)
    check(buf, appended)
    buf.set_filter("")
    check(buf, appended)


def test_a_batch_larger_than_the_buffer_keeps_its_newest_lines() -> None:
    buf = LogBuffer(3)
    buf.append(["a", "b"], [1.0, 2.0])
    gone = buf.append(["c", "d", "e", "f", "g"], [3.0, 4.0, 5.0, 6.0, 7.0])
    assert buf.kept_lines() == ["e", "f", "g"]
    assert (buf.total, buf.dropped, gone) == (7, 4, 2)  # both rows that were in view went
    assert [buf.stamp(s) for s in range(buf.first, buf.total)] == [5.0, 6.0, 7.0]


@pytest.mark.parametrize(("needle", "width"), [("", 0), ("", 2), ("a", 0), ("a", 2)])
def test_a_reader_keeps_their_line_while_old_lines_drop(needle: str, width: int) -> None:
    buf = LogBuffer(4)
    buf.set_filter(needle)
    buf.set_wrap_width(width)
    buf.append(["a-1!", "b-2!", "a-3!", "b-4!"], [0.0] * 4)  # two rows each when wrapped
    row = buf.row_of_seq(2)  # "a-3!" at the top of a reader's screen
    gone = buf.append(["b-5!", "a-6!"], [0.0] * 2)  # "a-1!" and "b-2!" leave
    assert gone == (1 if needle else 2) * (2 if width else 1)
    assert buf.row_of_seq(2) == row - gone
    rows = buf.view_rows()
    assert buf.append(["a"] * 5, [0.0] * 5) == rows  # more than it holds: every row left


def test_the_filter_is_smart_case_and_marks_every_match() -> None:
    buf = LogBuffer()
    buf.append(["Error one", "error two", "ERROR three", "fine"], [0.0] * 4)
    buf.set_filter("error")
    assert view_lines(buf) == ["Error one", "error two", "ERROR three"]
    assert buf.match_spans("an ErRoR and an error") == [(3, 8), (16, 21)]
    buf.set_filter("Error")
    assert view_lines(buf) == ["Error one"]
    assert buf.match_spans("error Error") == [(6, 11)]
    buf.set_filter("")
    assert buf.match_count == 4
    assert buf.match_spans("error") == []


def test_wrapped_rows_map_to_lines_and_back() -> None:
    buf = LogBuffer()
    buf.append(["short", "x" * 25, "\tend"], [0.0] * 3)
    buf.set_wrap_width(10)
    assert buf.view_rows() == 1 + 3 + 2  # the tab counts as the spaces it becomes
    assert [buf.row_text(r) for r in range(6)] == [
        (0, 0, "short"),
        (1, 0, "x" * 10),
        (1, 1, "x" * 10),
        (1, 2, "x" * 5),
        (2, 0, " " * 8 + "en"),
        (2, 1, "d"),
    ]
    assert buf.row_text(6) is None
    assert buf.seq_at_row(3) == 1 and buf.row_of_seq(2) == 4
    assert buf.seq_at_row(99) == 2  # clamped to the last row
    buf.set_wrap_width(0)
    assert buf.view_rows() == 3 and buf.row_of_seq(2) == 2


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LogBuffer(0)
    with pytest.raises(ValueError, match="width"):
        LogBuffer().set_wrap_width(-1)


def test_stamp_label_has_milliseconds_and_a_fixed_width() -> None:
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.123 ", stamp_label(1_700_000_000.1234))


# ----- the feed -------------------------------------------------------------------------------


def test_feed_notifies_once_per_batch_and_keeps_order_and_times() -> None:
    calls: list[int] = []
    feed = LogFeed(lambda: calls.append(1))
    feed.put("a")
    feed.put_many(["b", "c"])
    feed.put("d")
    assert (len(calls), feed.backlog) == (1, 4)
    lines, stamps = feed.take()
    assert lines == ["a", "b", "c", "d"]
    assert len(stamps) == 4 and stamps == sorted(stamps)
    assert feed.backlog == 0 and feed.take() == ([], [])
    feed.put("e")
    assert len(calls) == 2


def test_feed_from_a_thread_arrives_whole_and_in_order() -> None:
    feed = LogFeed(lambda: None)
    taken: list[str] = []

    def produce() -> None:
        for i in range(20_000):
            feed.put(f"n{i}")

    thread = threading.Thread(target=produce)
    thread.start()
    while thread.is_alive():
        taken += feed.take()[0]
    thread.join()
    taken += feed.take()[0]
    assert taken == [f"n{i}" for i in range(20_000)]


def test_wait_for_room_returns_when_told_to_stop() -> None:
    feed = LogFeed(lambda: None)
    feed.put_many(["x"] * (FEED_HIGH_WATER + 1))
    feed.wait_for_room(lambda: True)  # would wait for the UI without the stop
    assert feed.backlog == FEED_HIGH_WATER + 1
    feed.take()
    feed.wait_for_room()  # room enough: returns at once
