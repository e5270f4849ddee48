"""The lines behind a log pane: a bounded ring, a filter and wrapping, with no UI in sight.

:class:`LogBuffer` keeps the newest ``capacity`` lines with their arrival times, counts the
ones it dropped, and maps the rows of a view (all lines or the matching ones, one row per
line or wrapped at a width) to lines and back, so a pane draws only the rows on screen.
Lines are kept as received and cleaned (:func:`clean_line`) only when measured or drawn.
"""

from __future__ import annotations

import re
import time
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence

DEFAULT_CAPACITY = 100_000
TIMESTAMP_FORMAT = "%H:%M:%S"
TIMESTAMP_WIDTH = len("12:34:56.789 ")

Chop = Callable[[str, int], list[str]]
Cells = Callable[[str], int]

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


def char_cells(char: str) -> int:
    """Terminal cells one character takes: 0 (combining, format), 1, or 2 (wide)."""
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return 1
    if code < 0x20 or 0x7F <= code < 0xA0:
        return 0
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cell_len(text: str) -> int:
    """Terminal cells ``text`` takes (see :func:`char_cells`)."""
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(map(char_cells, text))


def chop_cells(text: str, width: int) -> list[str]:
    """``text`` cut into pieces of at most ``width`` cells, in order; ``""`` gives ``[]``.

    A character wider than ``width`` on its own still gets a piece of its own. A UI passes
    its own measure instead (see :class:`LogBuffer`) so that wrapping agrees with drawing.
    """
    if text.isascii() and text.isprintable():
        return [text[i : i + width] for i in range(0, len(text), width)]
    pieces: list[str] = []
    start = used = 0
    for i, char in enumerate(text):
        cells = char_cells(char)
        if used + cells > width and i > start:
            pieces.append(text[start:i])
            start, used = i, 0
        used += cells
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def rows_for(text: str, width: int, chop: Chop = chop_cells, cells: Cells = cell_len) -> int:
    """Screen rows that ``text`` takes when wrapped at ``width`` cells (after cleaning):
    as many as ``chop`` makes pieces of it (measuring is cheaper when it fits in one)."""
    if len(text) <= width and text.isascii() and "\t" not in text:
        return 1  # cleaning never makes such a line longer
    shown = clean_line(text)
    if shown.isascii():  # printable ASCII after cleaning: one cell a character
        return (len(shown) + width - 1) // width or 1
    if cells(shown) <= width:
        return 1
    return len(chop(shown, width))


def stamp_label(stamp: float) -> str:
    """An arrival time as drawn before its line: ``12:34:56.789`` and a space."""
    ms = int((stamp % 1) * 1000)
    return f"{time.strftime(TIMESTAMP_FORMAT, time.localtime(stamp))}.{ms:03d} "


class LogBuffer:
    """The newest ``capacity`` lines, and the rows of a view over them.

    Lines are numbered from 0 in arrival order (``seq``); the kept ones are ``first`` to
    ``total - 1``. The *view* is every kept line or, with a filter, the matching ones (its
    *entries*, oldest first); without wrapping each entry takes one row, with it as many as
    ``chop`` makes of its cleaned text at ``wrap_width`` cells. ``chop`` and ``cells`` are
    the UI's measure of cells, so that wrapping agrees with drawing (the defaults are
    :func:`chop_cells` and :func:`cell_len`).
    """

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, chop: Chop = chop_cells, cells: Cells = cell_len
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._chop = chop
        self._cells = cells
        self._ring: list[str] = [""] * capacity
        self._stamps: list[float] = [0.0] * capacity
        self._total = 0  # lines ever stored; line number `seq` lives at seq % capacity
        self.max_width = 0  # characters in the longest line ever stored
        # Filter: matching line numbers (absolute), the first still kept at _mstart.
        self.filter_text = ""
        self._fold = False
        self._matches: list[int] = []
        self._mstart = 0
        # Wrap: cumulative rows per view entry; entry k of the "all" view is line _cseq0 + k,
        # of the filtered view it is _matches[k]. _cum has one more item than entries.
        self.wrap_width = 0  # 0: no wrapping
        self._cum: list[int] = [0]
        self._cseq0 = 0

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
        """Entries in the view: kept lines that match the filter (all kept without one)."""
        return len(self._matches) - self._mstart if self.filter_text else self.kept

    @property
    def wrap(self) -> bool:
        return self.wrap_width > 0

    def line(self, seq: int) -> str:
        """The text of kept line ``seq`` (absolute number), as received."""
        return self._ring[seq % self.capacity]

    def stamp(self, seq: int) -> float:
        """The arrival time of kept line ``seq``."""
        return self._stamps[seq % self.capacity]

    def kept_lines(self) -> list[str]:
        """The kept buffer, oldest first (a copy)."""
        first, cap = self.first, self.capacity
        if self._total <= cap:
            return self._ring[: self._total]
        head = first % cap
        return self._ring[head:] + self._ring[:head]

    # ----- the view: which lines are shown, in which rows ---------------------------------

    def view_seq(self, i: int) -> int:
        """Line number of view entry ``i``."""
        return self._matches[self._mstart + i] if self.filter_text else self.first + i

    def _kstart(self) -> int:
        """Index in _cum of the first entry still in view."""
        return self._mstart if self.filter_text else self.first - self._cseq0

    def view_rows(self) -> int:
        """Rows the view needs (entries, or wrapped rows)."""
        if not self.wrap_width:
            return self.match_count
        return self._cum[-1] - self._cum[self._kstart()]

    def row_of_entry(self, i: int) -> int:
        """First row of view entry ``i``."""
        if not self.wrap_width:
            return i
        k = self._kstart()
        return self._cum[k + i] - self._cum[k]

    def entry_at_row(self, row: int) -> tuple[int, int]:
        """(view entry, row inside a wrapped line) for a row of the view."""
        if not self.wrap_width:
            return row, 0
        k = self._kstart()
        target = self._cum[k] + row
        j = bisect_right(self._cum, target, k, len(self._cum) - 1) - 1
        return j - k, target - self._cum[j]

    def seq_at_row(self, row: int) -> int | None:
        """Line number shown at ``row`` (clamped to the view), None for an empty view."""
        entries = self.match_count
        if entries == 0:
            return None
        entry, _ = self.entry_at_row(min(row, max(0, self.view_rows() - 1)))
        return self.view_seq(min(entry, entries - 1))

    def row_of_seq(self, seq: int) -> int:
        """Row of line ``seq`` in the view, or of the first shown line after it."""
        entries = self.match_count
        if not entries:
            return 0
        if self.filter_text:
            i = bisect_left(self._matches, seq, self._mstart) - self._mstart
        else:
            i = seq - self.first
        return self.row_of_entry(max(0, min(i, entries - 1)))

    def row_text(self, row: int) -> tuple[int, int, str] | None:
        """(line number, row inside the line, cleaned text) drawn at ``row`` of the view,
        None past its end."""
        if not 0 <= row < self.view_rows():
            return None
        entry, sub = self.entry_at_row(row)
        seq = self.view_seq(entry)
        text = clean_line(self.line(seq))
        width = self.wrap_width
        if width:
            if not text.isascii():
                pieces = self._chop(text, width)
                text = pieces[sub] if sub < len(pieces) else ""
            elif len(text) > width:
                text = text[sub * width : (sub + 1) * width]
        return seq, sub, text

    def match_spans(self, text: str) -> list[tuple[int, int]]:
        """Where the filter matches in ``text``: (start, end) pairs, in order, not overlapping."""
        needle = self.filter_text
        if not needle or not text:
            return []
        hay = text.lower() if self._fold else text
        spans: list[tuple[int, int]] = []
        i = hay.find(needle)
        while i >= 0:
            spans.append((i, i + len(needle)))
            i = hay.find(needle, i + len(needle))
        return spans

    def _rows(self, texts: Iterable[str], total: int) -> list[int]:
        """Running row counts of ``texts`` wrapped at wrap_width, starting after ``total``."""
        width, chop, cells = self.wrap_width, self._chop, self._cells
        cum: list[int] = []
        append = cum.append
        for text in texts:
            total += rows_for(text, width, chop, cells)
            append(total)
        return cum

    def _rebuild_wrap(self) -> None:
        if not self.wrap_width:
            self._cum, self._cseq0 = [0], 0
            return
        if self.filter_text:
            del self._matches[: self._mstart]  # matches of dropped lines need no rows
            self._mstart = 0
            texts: Iterable[str] = (self.line(s) for s in self._matches)
            self._cseq0 = 0
        else:
            texts = self.kept_lines()
            self._cseq0 = self.first
        self._cum = [0, *self._rows(texts, 0)]

    def _compact(self) -> None:
        """Forget bookkeeping of lines that left the buffer (amortised O(1) per line)."""
        if self.filter_text:
            start = self._mstart
            if start > 4096 and start * 2 > len(self._matches):
                del self._matches[:start]
                if self.wrap_width:
                    del self._cum[:start]
                self._mstart = 0
        elif self.wrap_width:
            start = self.first - self._cseq0
            if start > 4096 and start * 2 > len(self._cum):
                del self._cum[:start]
                self._cseq0 += start

    # ----- changes ------------------------------------------------------------------------

    def append(self, texts: Sequence[str], stamps: Sequence[float]) -> int:
        """Store lines (one arrival time each), dropping the oldest beyond ``capacity``.

        Returns how many rows left the top of the view, so a reader who scrolled back can
        be kept on their line (every row, when the batch alone overfills the buffer).
        """
        if not texts:
            return 0
        rows_before = self.view_rows()
        top_before = self._cum[self._kstart()] if self.wrap_width else 0
        first_before, mstart_before = self.first, self._mstart
        skip = len(texts) - self.capacity
        if skip > 0:
            # More lines than the buffer holds: only the newest ones are stored at all.
            self._total += skip
            texts, stamps = texts[skip:], stamps[skip:]
        seq0 = self._total
        self._put(texts, stamps)
        if self.filter_text:
            needle = self.filter_text
            if self._fold:
                new = [seq0 + i for i, t in enumerate(texts) if needle in t.lower()]
            else:
                new = [seq0 + i for i, t in enumerate(texts) if needle in t]
            self._matches.extend(new)
            self._mstart = bisect_left(self._matches, self.first, self._mstart)
            if self.wrap_width:
                self._cum.extend(self._rows((self.line(s) for s in new), self._cum[-1]))
        elif self.wrap_width:
            if skip > 0:
                self._rebuild_wrap()
            else:
                self._cum.extend(self._rows(texts, self._cum[-1]))
        if skip > 0:
            gone = rows_before
        elif self.wrap_width:
            gone = self._cum[self._kstart()] - top_before
        elif self.filter_text:
            gone = self._mstart - mstart_before
        else:
            gone = self.first - first_before
        self._compact()
        return gone

    def _put(self, texts: Sequence[str], stamps: Sequence[float]) -> None:
        """Write at most ``capacity`` lines into the ring after the newest."""
        cap, n = self.capacity, len(texts)
        pos = self._total % cap
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
        self.max_width = max(self.max_width, max(map(len, texts)))

    def set_filter(self, text: str) -> None:
        """Show only lines that contain ``text`` (case-insensitive when it is all lower case),
        searching the whole kept buffer; ``""`` shows everything again."""
        if text == self.filter_text:
            return
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
        self._rebuild_wrap()

    def set_wrap_width(self, width: int) -> None:
        """Wrap at ``width`` cells (at least 1), or not at all with 0."""
        if width < 0:
            raise ValueError("width must not be negative")
        if width != self.wrap_width:
            self.wrap_width = width
            self._rebuild_wrap()

    def clear(self) -> None:
        """Forget every line (the filter and the wrap width stay)."""
        self._ring = [""] * self.capacity
        self._stamps = [0.0] * self.capacity
        self._total = 0
        self.max_width = 0
        self._matches, self._mstart = [], 0
        self._cum, self._cseq0 = [0], 0
