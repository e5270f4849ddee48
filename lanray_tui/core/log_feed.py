"""The hand-off of log lines from a producer thread to the UI thread, with no UI in sight.

``put`` is cheap and thread-safe; it calls ``notify`` only when the feed goes from empty to
non-empty, so a fast stream costs one wake-up per batch, not one per line. A producer that
outruns the UI backs off with ``wait_for_room``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

# A producer pauses while this many lines wait in its feed (see LogFeed.wait_for_room).
FEED_HIGH_WATER = 50_000
# A producer lets the UI thread have the GIL every this many lines (see LogFeed.put).
YIELD_EVERY = 256


class LogFeed:
    """Thread-safe hand-off of lines from one producer thread to the UI thread.

    ``notify`` is called (from the producer's thread) when lines start waiting; the UI
    thread then calls :meth:`take`.
    """

    def __init__(self, notify: Callable[[], object]) -> None:
        self._notify = notify
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
            self._notify()
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
            self._notify()
        time.sleep(0)

    @property
    def backlog(self) -> int:
        """Lines handed over but not yet taken."""
        return len(self._lines)

    def wait_for_room(self, stop: Callable[[], bool] | None = None) -> None:
        """Back off while the UI is behind (it stays responsive; memory stays bounded);
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
