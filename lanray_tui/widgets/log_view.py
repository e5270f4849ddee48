"""The part of a log pane that draws: a virtual, bounded view over a :class:`LogBuffer`.

:class:`LogView` draws only the rows on screen through the Line API (``render_line``), so a
million lines cost what the visible twenty cost. It takes its :class:`LogFeed` in at most
every ``FLUSH_INTERVAL_S``, follows the end until the user scrolls up, and follows again
when they scroll back down to the end. The lines, the filter and the wrapping are the
buffer's (``lanray_tui/core/log_buffer.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.events import Resize
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

from ..core.log_buffer import DEFAULT_CAPACITY, TIMESTAMP_WIDTH, LogBuffer, stamp_label
from ..core.log_feed import LogFeed

FLUSH_INTERVAL_S = 0.05


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
        # Wrapping measures cells as drawing does: with rich's measure.
        self.buffer = LogBuffer(capacity, chop=chop_cells, cells=cell_len)
        self.feed = LogFeed(lambda: self.post_message(LogView.LinesReady()))
        self._flush_timer: Timer | None = None
        self._last_flush = 0.0
        self.flushes = 0
        self.flush_seconds_max = 0.0  # the longest the UI thread spent taking one batch in
        self.follow = True
        self._adjusting = False
        self.show_timestamps = False

    # ----- what the buffer knows, for the pane, tests and the benchmark -------------------

    @property
    def total(self) -> int:
        return self.buffer.total

    @property
    def kept(self) -> int:
        return self.buffer.kept

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    @property
    def match_count(self) -> int:
        return self.buffer.match_count

    @property
    def filter_text(self) -> str:
        return self.buffer.filter_text

    @property
    def wrap(self) -> bool:
        return self.buffer.wrap

    def kept_lines(self) -> list[str]:
        return self.buffer.kept_lines()

    def view_rows(self) -> int:
        return self.buffer.view_rows()

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
        rows_before = self.buffer.view_rows()
        gone = self.buffer.append(texts, stamps)  # rows that left the top of the view
        width_before = self.virtual_size.width
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_end()
            if self.virtual_size.width != width_before:
                # A horizontal scrollbar may come or go with the layout: stick again after it.
                self.call_after_refresh(self._restick)
        elif gone:
            # Keep a reader who scrolled back on their line.
            self._scroll_quietly(max(0, round(self.scroll_y) - gone))
        if self.buffer.view_rows() != rows_before or gone or self.follow:
            self.refresh()
        self.post_message(LogView.Updated(self))

    # ----- scrolling and following --------------------------------------------------------

    def _text_width(self) -> int:
        width = self.scrollable_content_region.width or self.size.width
        if self.show_timestamps:
            width -= TIMESTAMP_WIDTH
        return max(1, width)

    def _update_virtual_size(self) -> None:
        if self.wrap:
            width = 0
        else:
            width = self.buffer.max_width + (TIMESTAMP_WIDTH if self.show_timestamps else 0)
        self.virtual_size = Size(width, self.buffer.view_rows())

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
        if self.wrap and self._text_width() != self.buffer.wrap_width:
            self._relayout(self._top_seq())
        elif self.follow:
            self.call_after_refresh(self._restick)

    # ----- modes --------------------------------------------------------------------------

    def _top_seq(self) -> int | None:
        return self.buffer.seq_at_row(round(self.scroll_y))

    def _relayout(self, top_seq: int | None) -> None:
        """Lay the view out again after a change of mode; keep ``top_seq`` at the top."""
        if self.wrap:
            self.buffer.set_wrap_width(self._text_width())
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_end()
            self.call_after_refresh(self._restick)
        elif top_seq is not None:
            self._scroll_quietly(self.buffer.row_of_seq(top_seq))
        self.refresh()
        self.post_message(LogView.Updated(self))

    def set_wrap(self, wrap: bool) -> None:
        if wrap == self.wrap:
            return
        top = self._top_seq()
        self.buffer.set_wrap_width(self._text_width() if wrap else 0)
        self._relayout(top)

    def set_timestamps(self, show: bool) -> None:
        if show == self.show_timestamps:
            return
        top = self._top_seq()
        self.show_timestamps = show
        self._relayout(top)

    def set_filter(self, text: str) -> None:
        """Show only lines that contain ``text`` (case-insensitive when it is all lower case),
        searching the whole kept buffer; ``""`` shows everything again."""
        if text == self.filter_text:
            return
        top = self._top_seq()
        self.buffer.set_filter(text)
        self._relayout(top)

    def clear(self) -> None:
        self.buffer.clear()
        self._relayout(None)

    # ----- drawing ------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        shown = self.buffer.row_text(scroll_y + y)
        if shown is None:
            return Strip.blank(width, base)
        seq, sub, text = shown
        strip = Strip(self._highlight(text, base))
        if scroll_x and not self.wrap:
            strip = strip.crop(scroll_x, scroll_x + self._text_width())
        if self.show_timestamps:
            label = stamp_label(self.buffer.stamp(seq)) if sub == 0 else " " * TIMESTAMP_WIDTH
            style = base + self.get_component_rich_style("log-view--timestamp", partial=True)
            strip = Strip([Segment(label, style), *strip])
        return strip.crop_extend(0, width, base)

    def _highlight(self, text: str, base: Style) -> list[Segment]:
        spans = self.buffer.match_spans(text)
        if not spans:
            return [Segment(text, base)]
        style = base + self.get_component_rich_style("log-view--match", partial=True)
        out: list[Segment] = []
        start = 0
        for i, end in spans:
            if i > start:
                out.append(Segment(text[start:i], base))
            out.append(Segment(text[i:end], style))
            start = end
        if start < len(text):
            out.append(Segment(text[start:], base))
        return out

    def visible_text(self) -> list[str]:
        """The rows on screen as plain text (for tests and the benchmark)."""
        return [self.render_line(y).text for y in range(self.scrollable_content_region.height)]
