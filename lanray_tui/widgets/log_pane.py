"""A log pane that keeps up with a firehose: bounded buffer, virtual rendering, filter, wrap.

Three parts, each with one job:

* :class:`LogFeed` is the hand-off from a producer thread. ``put`` is cheap and thread-safe;
  it posts one :class:`LogView.LinesReady` only when the feed goes from empty to non-empty,
  so a fast stream costs one message per flush, not one per line.
* :class:`LogView` owns the lines (a ring of ``capacity`` lines with their arrival times)
  and draws only the rows on screen through the Line API (``render_line``), so a million
  lines cost what the visible twenty cost. It flushes the feed at most every
  ``FLUSH_INTERVAL_S`` and follows the end until the user scrolls up, and follows again
  when they scroll back down to the end.
* :class:`LogPane` puts the view, a filter input and a status line together and holds the
  keys (``/`` filter, ``w`` wrap, ``t`` timestamps, ``s`` save, ``f`` follow).
"""

from __future__ import annotations

import re
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import ClassVar

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.events import Resize
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input

DEFAULT_CAPACITY = 100_000
FLUSH_INTERVAL_S = 0.05
# A producer pauses while this many lines wait in its feed (see LogFeed.wait_for_room).
FEED_HIGH_WATER = 50_000
# A producer lets the UI thread have the GIL every this many lines (see LogFeed.put).
YIELD_EVERY = 256
TIMESTAMP_FORMAT = "%H:%M:%S"
TIMESTAMP_WIDTH = len("12:34:56.789 ")

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NEEDS_CLEANING = re.compile(r"[\x00-\x1f\x7f]")


def clean_line(text: str) -> str:
    """A line made safe to draw: no escape sequences, tabs expanded, no control characters.

    Lines are kept as received and cleaned only when drawn (a screenful at a time), so
    taking in a million lines costs no per-line work beyond storing them.
    """
    if _NEEDS_CLEANING.search(text) is None:
        return text
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "\t" in text:
        text = text.expandtabs()
    if "\r" in text:
        text = text.replace("\r", "")
    return _CONTROL.sub("\ufffd", text.replace("\n", " "))


def rows_for(text: str, width: int) -> int:
    """Screen rows that ``text`` takes when wrapped at ``width`` cells (after cleaning)."""
    if len(text) <= width and text.isascii() and "\t" not in text:
        return 1  # cleaning never makes such a line longer
    shown = clean_line(text)
    cells = len(shown) if shown.isascii() else cell_len(shown)
    return (cells + width - 1) // width or 1


class LogFeed:
    """Thread-safe hand-off of lines from one producer thread to one :class:`LogView`."""

    def __init__(self, view: LogView) -> None:
        self._view = view
        self._lock = threading.Lock()
        self._lines: list[str] = []
        # (index of the first line with this arrival time, time): one mark per millisecond,
        # not one float per line.
        self._marks: list[tuple[int, float]] = []
        self._last_mark = 0.0
        self._signalled = False
        self._puts = 0

    def put(self, line: str) -> None:
        """Hand over one line (without its newline); callable from any thread."""
        now = time.time()
        with self._lock:
            if now - self._last_mark >= 0.001 or not self._marks:
                self._marks.append((len(self._lines), now))
                self._last_mark = now
            self._lines.append(line)
            signal = not self._signalled
            self._signalled = True
        if signal:
            self._view.post_message(LogView.LinesReady())
        self._puts += 1
        if self._puts % YIELD_EVERY == 0:
            # A busy producer would keep the GIL for a whole switch interval (5 ms) each
            # time the UI thread wants it; handing it over now keeps keys quick.
            time.sleep(0)

    def put_many(self, lines: Iterable[str]) -> None:
        """Hand over several lines that arrived together."""
        now = time.time()
        with self._lock:
            self._marks.append((len(self._lines), now))
            self._last_mark = now
            self._lines.extend(lines)
            signal = not self._signalled
            self._signalled = True
        if signal:
            self._view.post_message(LogView.LinesReady())
        time.sleep(0)

    @property
    def backlog(self) -> int:
        """Lines handed over but not yet taken by the view."""
        return len(self._lines)

    def wait_for_room(self, stop: Callable[[], bool] | None = None) -> None:
        """Back off while the view is behind (the UI stays responsive; memory stays bounded);
        returns early once ``stop()`` is true."""
        while len(self._lines) > FEED_HIGH_WATER:
            if stop is not None and stop():
                return
            time.sleep(0.005)

    def take(self) -> tuple[list[str], list[float]]:
        """Everything handed over so far, with one arrival time per line (UI thread)."""
        with self._lock:
            lines, marks = self._lines, self._marks
            self._lines, self._marks = [], []
            self._signalled = False
        stamps: list[float] = []
        for i, (start, stamp) in enumerate(marks):
            end = marks[i + 1][0] if i + 1 < len(marks) else len(lines)
            stamps.extend([stamp] * (end - start))
        return lines, stamps


class LogView(ScrollView, can_focus=True):
    """A virtual, bounded log: see the module docstring."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"log-view--timestamp", "log-view--match"}
    DEFAULT_CSS = """
    LogView {
        background: $surface;
        overflow-y: scroll;
        overflow-x: auto;
        scrollbar-size-vertical: 1;
    }
    LogView > .log-view--timestamp { text-style: dim; }
    LogView > .log-view--match { text-style: reverse; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("end", "follow", "Follow", show=False),
        Binding("home", "top", "Top", show=False),
    ]

    class LinesReady(Message):
        """The feed has lines waiting (posted once per batch)."""

    class Updated(Message):
        """Counts, follow state or modes changed (for the status line)."""

        def __init__(self, view: LogView) -> None:
            super().__init__()
            self.view = view

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, LogView.Updated) and message.view is self.view

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ring: list[str] = [""] * capacity
        self._stamps: list[float] = [0.0] * capacity
        self._total = 0  # lines ever stored; line number `seq` lives at seq % capacity
        self._max_width = 0
        self.feed = LogFeed(self)
        self._flush_timer: Timer | None = None
        self._last_flush = 0.0
        self.flushes = 0
        self.flush_seconds_max = 0.0  # the longest the UI thread spent taking one batch in
        self.follow = True
        self._adjusting = False
        self.wrap = False
        self.show_timestamps = False
        # Filter: matching line numbers (absolute), the first still kept at _mstart.
        self.filter_text = ""
        self._fold = False
        self._matches: list[int] = []
        self._mstart = 0
        # Wrap: cumulative rows per view entry; entry k of the "all" view is line _cseq0 + k,
        # of the filtered view it is _matches[k]. _cum has one more item than entries.
        self._cum: list[int] = [0]
        self._cseq0 = 0
        self._wrap_width = 0

    # ----- counts -------------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Lines received since the start (kept or dropped)."""
        return self._total

    @property
    def first(self) -> int:
        """Number of the oldest kept line."""
        return max(0, self._total - self.capacity)

    @property
    def dropped(self) -> int:
        """Lines pushed out of the buffer because it was full."""
        return self.first

    @property
    def kept(self) -> int:
        return self._total - self.first

    @property
    def match_count(self) -> int:
        return len(self._matches) - self._mstart if self.filter_text else self.kept

    def line(self, seq: int) -> str:
        """The text of kept line ``seq`` (absolute number)."""
        return self._ring[seq % self.capacity]

    def kept_lines(self) -> list[str]:
        """The kept buffer, oldest first (a copy)."""
        first, cap = self.first, self.capacity
        if self._total <= cap:
            return self._ring[: self._total]
        head = first % cap
        return self._ring[head:] + self._ring[:head]

    # ----- the view: which lines are shown, in which rows ---------------------------------

    def _view_len(self) -> int:
        return len(self._matches) - self._mstart if self.filter_text else self.kept

    def _view_seq(self, i: int) -> int:
        return self._matches[self._mstart + i] if self.filter_text else self.first + i

    def _kstart(self) -> int:
        """Index in _cum of the first entry still in view."""
        return self._mstart if self.filter_text else self.first - self._cseq0

    def view_rows(self) -> int:
        """Rows the view needs (lines, or wrapped rows)."""
        if not self.wrap:
            return self._view_len()
        return self._cum[-1] - self._cum[self._kstart()]

    def _row_of_entry(self, i: int) -> int:
        if not self.wrap:
            return i
        k = self._kstart()
        return self._cum[k + i] - self._cum[k]

    def _entry_at_row(self, row: int) -> tuple[int, int]:
        """(view entry, row inside a wrapped line) for a row of the view."""
        if not self.wrap:
            return row, 0
        k = self._kstart()
        target = self._cum[k] + row
        j = bisect_right(self._cum, target, k, len(self._cum) - 1) - 1
        return j - k, target - self._cum[j]

    def _text_width(self) -> int:
        width = self.scrollable_content_region.width or self.size.width
        if self.show_timestamps:
            width -= TIMESTAMP_WIDTH
        return max(1, width)

    def _rebuild_wrap(self) -> None:
        width = self._wrap_width = self._text_width()
        if self.filter_text:
            del self._matches[: self._mstart]  # matches of dropped lines need no rows
            self._mstart = 0
            texts: Iterable[str] = (self.line(s) for s in self._matches)
            self._cseq0 = 0
        else:
            texts = self.kept_lines()
            self._cseq0 = self.first
        cum = [0]
        total = 0
        append = cum.append
        for text in texts:
            total += rows_for(text, width)
            append(total)
        self._cum = cum

    def _extend_wrap(self, texts: Sequence[str]) -> None:
        width = self._wrap_width
        total = self._cum[-1]
        append = self._cum.append
        for text in texts:
            total += rows_for(text, width)
            append(total)

    def _compact(self) -> None:
        """Forget bookkeeping of lines that left the buffer (amortised O(1) per line)."""
        if self.filter_text:
            start = self._mstart
            if start > 4096 and start * 2 > len(self._matches):
                del self._matches[:start]
                if self.wrap:
                    del self._cum[:start]
                self._mstart = 0
        elif self.wrap:
            start = self.first - self._cseq0
            if start > 4096 and start * 2 > len(self._cum):
                del self._cum[:start]
                self._cseq0 += start

    # ----- taking lines in ----------------------------------------------------------------

    def write_lines(self, lines: Sequence[str], stamp: float | None = None) -> None:
        """Add lines right away (UI thread). Producers in threads use :attr:`feed`."""
        now = time.time() if stamp is None else stamp
        self._store(list(lines), [now] * len(lines))

    def on_log_view_lines_ready(self, message: LogView.LinesReady) -> None:
        message.stop()
        if self._flush_timer is not None:
            return
        wait = FLUSH_INTERVAL_S - (time.monotonic() - self._last_flush)
        if wait <= 0:
            self._flush()
        else:
            self._flush_timer = self.set_timer(wait, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        started = self._last_flush = time.monotonic()
        lines, stamps = self.feed.take()
        if lines:
            self._store(lines, stamps)
        self.flushes += 1
        self.flush_seconds_max = max(self.flush_seconds_max, time.monotonic() - started)

    def _store(self, texts: list[str], stamps: list[float]) -> None:
        if not texts:
            return
        cap = self.capacity
        rows_before = self.view_rows()
        view_row_of_first_before = 0 if not self.wrap else self._cum[self._kstart()]
        first_before, mstart_before = self.first, self._mstart
        skip = len(texts) - cap
        if skip > 0:
            # More lines than the buffer holds: only the newest ones are stored at all.
            self._total += skip
            texts, stamps = texts[skip:], stamps[skip:]
        n = len(texts)
        seq0 = self._total
        pos = seq0 % cap
        end = pos + n
        if end <= cap:
            self._ring[pos:end] = texts
            self._stamps[pos:end] = stamps
        else:
            k = cap - pos
            self._ring[pos:] = texts[:k]
            self._ring[: n - k] = texts[k:]
            self._stamps[pos:] = stamps[:k]
            self._stamps[: n - k] = stamps[k:]
        self._total += n
        self._max_width = max(self._max_width, max(map(len, texts)))

        first = self.first
        if self.filter_text:
            needle = self.filter_text
            if self._fold:
                new = [seq0 + i for i, t in enumerate(texts) if needle in t.lower()]
            else:
                new = [seq0 + i for i, t in enumerate(texts) if needle in t]
            self._matches.extend(new)
            self._mstart = bisect_left(self._matches, first, self._mstart)
            if self.wrap:
                self._extend_wrap([self.line(s) for s in new])
        elif self.wrap:
            if skip > 0:
                self._rebuild_wrap()
            else:
                self._extend_wrap(texts)

        # Rows that left the top of the view: keep a reader who scrolled back on their line.
        if skip > 0:
            gone = rows_before
        elif self.wrap:
            gone = self._cum[self._kstart()] - view_row_of_first_before
        elif self.filter_text:
            gone = self._mstart - mstart_before
        else:
            gone = first - first_before
        self._compact()
        width_before = self.virtual_size.width
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_end()
            if self.virtual_size.width != width_before:
                # A horizontal scrollbar may come or go with the layout: stick again after it.
                self.call_after_refresh(self._restick)
        elif gone:
            self._scroll_quietly(max(0, round(self.scroll_y) - gone))
        if self.view_rows() != rows_before or gone or self.follow:
            self.refresh()
        self.post_message(LogView.Updated(self))

    # ----- scrolling and following --------------------------------------------------------

    def _update_virtual_size(self) -> None:
        if self.wrap:
            width = 0
        else:
            width = self._max_width + (TIMESTAMP_WIDTH if self.show_timestamps else 0)
        self.virtual_size = Size(width, self.view_rows())

    def _scroll_quietly(self, y: float) -> None:
        """Scroll without the user's intent (follow state is left as it is)."""
        self._adjusting = True
        try:
            self.scroll_to(y=y, animate=False, force=True)
        finally:
            self._adjusting = False

    def _scroll_to_end(self) -> None:
        self._scroll_quietly(self.max_scroll_y)

    def _restick(self) -> None:
        if self.follow and self.scroll_y != self.max_scroll_y:
            self._scroll_to_end()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._adjusting:
            return
        # The user moved: following stops above the end and resumes at it.
        at_end = new_value >= self.max_scroll_y
        if at_end != self.follow:
            self.follow = at_end
            self.post_message(LogView.Updated(self))

    def set_follow(self, follow: bool) -> None:
        self.follow = follow
        if follow:
            self._scroll_to_end()
        self.post_message(LogView.Updated(self))

    def action_follow(self) -> None:
        self.set_follow(True)

    def action_top(self) -> None:
        self.follow = False
        self._scroll_quietly(0)
        self.post_message(LogView.Updated(self))

    def on_resize(self, event: Resize) -> None:
        if self.wrap and self._text_width() != self._wrap_width:
            self._relayout(keep_position=True)
        elif self.follow:
            self.call_after_refresh(self._restick)

    # ----- modes --------------------------------------------------------------------------

    def _top_seq(self) -> int | None:
        if self._view_len() == 0:
            return None
        entry, _ = self._entry_at_row(min(round(self.scroll_y), max(0, self.view_rows() - 1)))
        return self._view_seq(min(entry, self._view_len() - 1))

    def _relayout(self, keep_position: bool, top_seq: int | None = None) -> None:
        if keep_position and top_seq is None:
            top_seq = self._top_seq()
        if self.wrap:
            self._rebuild_wrap()
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_end()
            self.call_after_refresh(self._restick)
        elif top_seq is not None:
            self._scroll_quietly(self._row_of_seq(top_seq))
        self.refresh()
        self.post_message(LogView.Updated(self))

    def _row_of_seq(self, seq: int) -> int:
        """Row of line ``seq`` in the view, or of the first shown line after it."""
        if self.filter_text:
            i = bisect_left(self._matches, seq, self._mstart) - self._mstart
        else:
            i = seq - self.first
        i = max(0, min(i, self._view_len() - 1))
        return self._row_of_entry(i) if self._view_len() else 0

    def set_wrap(self, wrap: bool) -> None:
        if wrap == self.wrap:
            return
        top = self._top_seq()
        self.wrap = wrap
        self._cum, self._cseq0 = [0], 0
        self._relayout(keep_position=True, top_seq=top)

    def set_timestamps(self, show: bool) -> None:
        if show == self.show_timestamps:
            return
        top = self._top_seq()
        self.show_timestamps = show
        self._relayout(keep_position=True, top_seq=top)

    def set_filter(self, text: str) -> None:
        """Show only lines that contain ``text`` (case-insensitive when it is all lower case),
        searching the whole kept buffer; ``""`` shows everything again."""
        if text == self.filter_text:
            return
        top = self._top_seq()
        self.filter_text = text
        self._fold = text == text.lower()
        self._matches, self._mstart = [], 0
        if text:
            first = self.first
            lines = self.kept_lines()
            if self._fold:
                self._matches = [first + i for i, t in enumerate(lines) if text in t.lower()]
            else:
                self._matches = [first + i for i, t in enumerate(lines) if text in t]
        self._relayout(keep_position=True, top_seq=top)

    def clear(self) -> None:
        self._ring = [""] * self.capacity
        self._stamps = [0.0] * self.capacity
        self._total = 0
        self._max_width = 0
        self._matches, self._mstart = [], 0
        self._cum, self._cseq0 = [0], 0
        self._relayout(keep_position=False)

    # ----- drawing ------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        row = scroll_y + y
        if row >= self.view_rows() or self._view_len() == 0:
            return Strip.blank(width, base)
        entry, sub = self._entry_at_row(row)
        seq = self._view_seq(entry)
        text = clean_line(self.line(seq))
        text_width = self._text_width()
        if self.wrap:
            if not text.isascii():
                pieces = chop_cells(text, text_width)
                text = pieces[sub] if sub < len(pieces) else ""
            elif len(text) > text_width:
                text = text[sub * text_width : (sub + 1) * text_width]
            offset = 0
        else:
            offset = scroll_x
        segments = self._highlight(text, base)
        strip = Strip(segments)
        if offset:
            strip = strip.crop(offset, offset + text_width)
        if self.show_timestamps:
            if sub == 0:
                stamp = self._stamps[seq % self.capacity]
                ms = int((stamp % 1) * 1000)
                label = f"{time.strftime(TIMESTAMP_FORMAT, time.localtime(stamp))}.{ms:03d} "
            else:
                label = " " * TIMESTAMP_WIDTH
            style = base + self.get_component_rich_style("log-view--timestamp", partial=True)
            strip = Strip([Segment(label, style), *strip])
        return strip.crop_extend(0, width, base)

    def _highlight(self, text: str, base: Style) -> list[Segment]:
        needle = self.filter_text
        if not needle or not text:
            return [Segment(text, base)]
        hay = text.lower() if self._fold else text
        style = base + self.get_component_rich_style("log-view--match", partial=True)
        out: list[Segment] = []
        start = 0
        while True:
            i = hay.find(needle, start)
            if i < 0:
                break
            if i > start:
                out.append(Segment(text[start:i], base))
            out.append(Segment(text[i : i + len(needle)], style))
            start = i + len(needle)
        if start < len(text):
            out.append(Segment(text[start:], base))
        return out

    def visible_text(self) -> list[str]:
        """The rows on screen as plain text (for tests and the benchmark)."""
        return [self.render_line(y).text for y in range(self.scrollable_content_region.height)]


class LogStatus(Widget):
    """One line of text; changing it repaints the line without a layout pass."""

    DEFAULT_CSS = """
    LogStatus { height: 1; width: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.text = ""

    def set_text(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        return Text(self.text, no_wrap=True, overflow="ellipsis")


class LogPane(Vertical):
    """A :class:`LogView` with a filter box and a status line; ``source`` names the log."""

    DEFAULT_CSS = """
    LogPane { height: 1fr; }
    LogPane > LogView { height: 1fr; }
    LogPane > .log-pane--filter { display: none; height: 3; }
    LogPane.-filtering > .log-pane--filter { display: block; }
    LogPane > .log-pane--status { height: 1; padding: 0 1; background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("w", "toggle_wrap", "Wrap"),
        Binding("t", "toggle_timestamps", "Time"),
        Binding("s", "save", "Save"),
        Binding("f", "follow", "Follow", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    class Saved(Message):
        def __init__(self, pane: LogPane, path: Path | None, error: str = "") -> None:
            super().__init__()
            self.pane = pane
            self.path = path
            self.error = error

    def __init__(
        self,
        source: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        save_dir: Path | None = None,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.source = source
        self.save_dir = save_dir or Path.cwd()
        self.view = LogView(capacity)
        self.note = ""
        self._filter_timer: Timer | None = None

    @property
    def feed(self) -> LogFeed:
        return self.view.feed

    def compose(self) -> ComposeResult:
        yield self.view
        filter_box = Input(placeholder="filter: text to look for (Enter keeps it, Esc clears)")
        filter_box.add_class("log-pane--filter")
        yield filter_box
        status = LogStatus()
        status.add_class("log-pane--status")
        yield status

    def on_mount(self) -> None:
        self.update_status()

    def status_text(self) -> str:
        v = self.view
        parts = [f"{self.source}: {v.kept:,} lines"]
        if v.dropped:
            parts.append(f"{v.dropped:,} dropped")
        parts.append("following" if v.follow else "paused (End follows)")
        if v.filter_text:
            parts.append(f"filter {v.filter_text!r}: {v.match_count:,}")
        if v.wrap:
            parts.append("wrap")
        if v.show_timestamps:
            parts.append("time")
        if self.note:
            parts.append(self.note)
        return " · ".join(parts)

    def update_status(self) -> None:
        self.query_one(LogStatus).set_text(self.status_text())

    def on_log_view_updated(self, message: LogView.Updated) -> None:
        message.stop()
        self.update_status()

    # ----- actions ------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one(".log-pane--filter", Input)
        box.value = self.view.filter_text
        self.add_class("-filtering")
        box.focus()

    @on(Input.Changed, ".log-pane--filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._filter_timer is not None:
            self._filter_timer.stop()
        value = event.value
        self._filter_timer = self.set_timer(0.08, lambda: self.view.set_filter(value))

    @on(Input.Submitted, ".log-pane--filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self.view.set_filter(event.value)
        self.remove_class("-filtering")
        self.view.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":
            # Without a filter, Esc belongs to the screen (e.g. back to the menu).
            return bool(self.view.filter_text) or self.has_class("-filtering")
        return True

    def action_clear_filter(self) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        was_open = self.has_class("-filtering")
        self.remove_class("-filtering")
        self.query_one(".log-pane--filter", Input).value = ""
        self.view.set_filter("")
        if was_open:
            self.view.focus()

    def action_toggle_wrap(self) -> None:
        self.view.set_wrap(not self.view.wrap)

    def action_toggle_timestamps(self) -> None:
        self.view.set_timestamps(not self.view.show_timestamps)

    def action_follow(self) -> None:
        self.view.set_follow(True)

    def action_save(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.save_dir / f"{self.source}-{stamp}.log"
        self.note = "saving…"
        self.update_status()
        self._save(path, self.view.kept_lines())

    @work(thread=True, exclusive=True, exit_on_error=False, group="log-save")
    def _save(self, path: Path, lines: list[str]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8", errors="replace") as f:
                for line in lines:
                    f.write(line)
                    f.write("\n")
        except OSError as exc:
            self.post_message(LogPane.Saved(self, None, f"could not save the log: {exc}"))
            return
        self.post_message(LogPane.Saved(self, path))

    def on_log_pane_saved(self, message: LogPane.Saved) -> None:
        if message.pane is not self:
            return
        message.stop()
        if message.path is None:
            self.note = "save failed"
            self.notify(message.error, severity="error")
        else:
            self.note = f"saved {message.path}"
            self.notify(f"saved {self.view.kept:,} lines to {message.path}", title="log saved")
        self.update_status()
