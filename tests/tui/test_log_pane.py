"""The log pane: follow and re-stick, filter over the whole buffer, drops, wrap, time, save."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from textual.app import App, ComposeResult
from textual.pilot import Pilot

from lanray_tui.core.log_buffer import clean_line, rows_for
from lanray_tui.widgets.log_pane import LogPane, LogStatus, LogView


class PaneApp(App[None]):
    def __init__(self, capacity: int = 100_000, save_dir: Path | None = None) -> None:
        super().__init__()
        self.capacity = capacity
        self.save_dir = save_dir

    def compose(self) -> ComposeResult:
        yield LogPane("ray", capacity=self.capacity, save_dir=self.save_dir)

    def on_mount(self) -> None:
        self.query_one(LogView).focus()


async def settle(pilot: Pilot[None], view: LogView, total: int) -> None:
    """Wait until the view has taken ``total`` lines in and drawn them."""
    for _ in range(400):
        if view.total >= total and not view.feed.backlog:
            break
        await pilot.pause(0.01)
    await pilot.pause()
    assert view.total == total


async def test_follows_stops_when_scrolled_up_and_resticks_at_the_end() -> None:
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.feed.put_many(f"line {i}" for i in range(200))
        await settle(pilot, view, 200)
        assert view.follow
        assert view.scroll_y == view.max_scroll_y > 0
        assert view.visible_text()[-1].startswith("line 199")

        await pilot.press("up", "up", "up")
        assert not view.follow
        held = view.scroll_y
        view.feed.put_many(f"more {i}" for i in range(50))
        await settle(pilot, view, 250)
        assert view.scroll_y == held  # new lines do not move a reader who scrolled back
        assert "paused" in app.query_one(LogPane).status_text()

        # Scrolling back down to the very end follows again, by itself.
        await pilot.press("pagedown", "pagedown", "pagedown", "pagedown")
        assert view.follow
        view.feed.put_many(["newest"])
        await settle(pilot, view, 251)
        assert view.scroll_y == view.max_scroll_y
        assert view.visible_text()[-1].startswith("newest")

        await pilot.press("home")
        assert not view.follow
        await pilot.press("end")
        assert view.follow and view.scroll_y == view.max_scroll_y


async def test_filter_searches_the_whole_kept_buffer() -> None:
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.feed.put_many(
            ("needle-7 is here" if i == 7 else f"hay {i:06d} nothing to see") for i in range(50_000)
        )
        await settle(pilot, view, 50_000)
        assert view.follow and "hay 049999" in view.visible_text()[-1]

        await pilot.press("slash", *"needle-7", "enter")
        assert view.filter_text == "needle-7"
        assert view.match_count == 1
        assert view.visible_text()[0].startswith("needle-7 is here")
        assert "filter 'needle-7': 1" in app.query_one(LogPane).status_text()

        # New lines that match join the filtered view; others do not.
        view.feed.put_many(["another needle-7", "plain"])
        await settle(pilot, view, 50_002)
        assert view.match_count == 2

        await pilot.press("escape")
        assert view.filter_text == ""
        assert view.match_count == 50_002


async def test_filter_is_smart_case() -> None:
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.write_lines(["Error one", "error two", "ERROR three"])
        await pilot.pause()
        view.set_filter("error")
        assert view.match_count == 3
        view.set_filter("Error")
        assert view.match_count == 1


async def test_a_full_buffer_drops_the_oldest_and_says_how_many() -> None:
    app = PaneApp(capacity=1_000)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.feed.put_many(f"line {i}" for i in range(1_500))
        await settle(pilot, view, 1_500)
        assert (view.kept, view.dropped) == (1_000, 500)
        assert view.kept_lines()[0] == "line 500"
        assert view.kept_lines()[-1] == "line 1499"
        await pilot.pause()
        assert "500 dropped" in app.query_one(LogStatus).text


async def test_reader_stays_on_their_line_while_old_lines_drop() -> None:
    app = PaneApp(capacity=1_000)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.feed.put_many(f"line {i}" for i in range(1_000))
        await settle(pilot, view, 1_000)
        await pilot.press("pageup")
        top = view.visible_text()[0].strip()
        view.feed.put_many(f"line {i}" for i in range(1_000, 1_100))
        await settle(pilot, view, 1_100)
        assert not view.follow
        assert view.visible_text()[0].strip() == top


async def test_wrap_and_timestamp_toggles() -> None:
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        long_line = "start " + "x" * 200 + " end"
        view.feed.put_many(["short", long_line])
        await settle(pilot, view, 2)
        assert view.view_rows() == 2
        assert " end" not in "".join(view.visible_text())

        await pilot.press("w")
        assert view.wrap
        assert view.view_rows() > 3
        assert any(row.rstrip().endswith(" end") for row in view.visible_text())

        await pilot.press("t")
        assert view.show_timestamps
        first = view.visible_text()[0]
        assert re.match(r"\d\d:\d\d:\d\d\.\d\d\d short", first), first

        await pilot.press("w", "t")
        assert not view.wrap and not view.show_timestamps
        assert view.visible_text()[0].startswith("short")
        status = app.query_one(LogPane).status_text()
        assert "wrap" not in status and "time" not in status


async def test_save_writes_the_kept_buffer_and_shows_the_path(tmp_path: Path) -> None:
    app = PaneApp(capacity=100, save_dir=tmp_path / "saved")
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.feed.put_many(f"line {i}" for i in range(150))
        await settle(pilot, view, 150)
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        saved = list((tmp_path / "saved").glob("ray-*.log"))
        assert len(saved) == 1
        assert saved[0].read_text().splitlines() == [f"line {i}" for i in range(50, 150)]
        assert str(saved[0]) in app.query_one(LogPane).status_text()


async def test_feed_from_a_thread_is_batched_and_in_order() -> None:
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)

        def produce() -> None:
            for i in range(20_000):
                view.feed.put(f"n{i}")

        thread = threading.Thread(target=produce)
        thread.start()
        thread.join()
        await settle(pilot, view, 20_000)
        lines = view.kept_lines()
        assert lines[0] == "n0" and lines[-1] == "n19999"
        assert lines == [f"n{i}" for i in range(20_000)]


def test_lines_are_cleaned_for_drawing() -> None:
    raw = ["\x1b[32mgreen\x1b[0m", "tab\there", "bell\x07", "crlf\r", "in\nside", "plain é"]
    assert [clean_line(r) for r in raw] == [
        "green",
        "tab     here",
        "bell\ufffd",
        "crlf",
        "in side",
        "plain é",
    ]
    assert rows_for("x" * 10, 10) == 1
    assert rows_for("x" * 11, 10) == 2
    assert rows_for("\t" * 3, 10) == 3  # tabs count as the spaces they become
    assert rows_for("界" * 6, 10) == 2  # wide characters take two cells


async def test_escape_codes_are_not_drawn() -> None:
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.write_lines(["\x1b[31mred\x1b[0m alert\x07"])
        await pilot.pause()
        assert view.visible_text()[0].rstrip() == "red alert\ufffd"


async def test_still_shows_the_last_line_when_a_scrollbar_appears() -> None:
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.feed.put_many(f"{i:04d} " + "y" * 65 for i in range(100))
        await settle(pilot, view, 100)
        assert view.visible_text()[-1].startswith("0099")
        await pilot.press("t")  # 13 more columns: a horizontal scrollbar takes a row
        await pilot.pause()
        assert view.show_horizontal_scrollbar
        assert view.follow
        assert "0099" in view.visible_text()[-1]


async def test_wrapped_wide_characters_are_all_drawn() -> None:
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        line = "a" + "界" * 118  # 39 wide characters fit a 79-cell row: one cell is left over
        view.write_lines([line])
        await pilot.press("w")
        rows = [row.rstrip() for row in view.visible_text()[: view.view_rows()]]
        assert view.view_rows() == 4
        assert "".join(rows) == line
