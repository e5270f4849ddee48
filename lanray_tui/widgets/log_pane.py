"""A log pane that keeps up with a firehose: bounded buffer, virtual rendering, filter, wrap.

* :class:`~lanray_tui.core.log_buffer.LogBuffer` keeps the lines, filters and wraps them,
  and :class:`~lanray_tui.core.log_feed.LogFeed` hands them over from a producer thread
  (no Textual in either).
* :class:`~lanray_tui.widgets.log_view.LogView` draws the rows on screen and follows the end.
* :class:`LogPane` puts the view, a filter input and a status line together and holds the
  keys (``/`` filter, ``w`` wrap, ``t`` timestamps, ``s`` save, ``f`` follow).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input

from ..core.log_buffer import DEFAULT_CAPACITY
from ..core.log_feed import FEED_HIGH_WATER, LogFeed
from .log_view import LogView

# Screens and the benchmark reach the feed through the pane's module.
__all__ = ["DEFAULT_CAPACITY", "FEED_HIGH_WATER", "LogFeed", "LogPane", "LogStatus", "LogView"]


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
