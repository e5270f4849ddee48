"""Control-socket calls from thread workers that a screen can cut short.

``ControlClient.stream`` blocks in ``readline`` until the agent sends a line; a quiet log
would keep its thread (and the process exit) waiting forever. :class:`AgentLink` remembers
the sockets it opened so that :meth:`close` can shut them down from the UI thread: the
blocked read returns at once and the worker ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.control import ControlClient
from ..core.errors import LanrayError, NotRunningError
from ..core.protocol import JobLogItem, LogLine, Request

if TYPE_CHECKING:
    from textual.worker import Worker

    from ..widgets.log_pane import LogFeed

T = TypeVar("T")


class AgentLink(ControlClient):
    """A :class:`ControlClient` whose open connections :meth:`close` can interrupt."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        super().__init__(socket_path, timeout)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False

    def _connect(self, timeout: float | None) -> socket.socket:
        with self._lock:
            if self._closed:
                raise NotRunningError("the view of this node was closed")
        s = super()._connect(timeout)
        with self._lock:
            if self._closed:
                s.close()
                raise NotRunningError("the view of this node was closed")
            self._open.add(s)
        return s

    def _forget(self) -> None:
        with self._lock:
            self._open = {s for s in self._open if s.fileno() != -1}

    def _exchange(self, doc: dict[str, Any], timeout: float | None) -> Any:
        try:
            return super()._exchange(doc, timeout)
        finally:
            self._forget()

    def stream(self, req: Request[T]) -> Iterator[T]:
        try:
            yield from super().stream(req)
        finally:
            self._forget()

    def close(self) -> None:
        """Interrupt every call and stream in flight; later calls fail at once."""
        with self._lock:
            self._closed = True
            sockets, self._open = self._open, set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def pump_lines(
    items: Iterable[LogLine | JobLogItem],
    feed: LogFeed,
    worker: Worker[Any],
    on_line: Callable[[str], None] | None = None,
    ended: str = "the agent ended the log stream",
) -> str | None:
    """Feed the ``line`` of each streamed item into a log pane, backing off while the pane
    is behind; returns why the stream stopped (None when the worker was cancelled)."""
    from ..widgets.log_pane import FEED_HIGH_WATER

    try:
        for item in items:
            if worker.is_cancelled:
                return None
            if item.line is None:
                continue  # a stream's other items (a job's state, say)
            line = item.line
            feed.put(line)
            if on_line is not None:
                on_line(line)
            if feed.backlog > FEED_HIGH_WATER:
                feed.wait_for_room(lambda: worker.is_cancelled)
    except LanrayError as exc:
        from ..messages import describe

        return describe(exc)
    except (OSError, ValueError) as exc:
        return f"the log stream broke: {exc}"
    return None if worker.is_cancelled else ended
