"""Plain-text snapshots of whole screens at 80x24, with fixed data.

Text rather than SVG: a diff shows what moved, and it holds with NO_COLOR. (The SVG plugin,
pytest-textual-snapshot 1.1.0, pins syrupy 4.8 which needs pytest < 9; the project pins
pytest 9.) Update after a deliberate change with ``LANRAY_UPDATE_SNAPSHOTS=1 pytest ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from textual.app import App

from lanray_tui.app import LanrayApp
from lanray_tui.screens.host_form import HostFormScreen
from lanray_tui.screens.menu import MenuScreen
from lanray_tui.screens.new_job import NewJobScreen
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.tui import attached, quiet_lan, started, wait_for

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"
SIZE = (80, 24)


def screen_text(app: App[Any]) -> str:
    update = app.screen._compositor.render_full_update()
    lines = ["".join(strip.text for strip in line).rstrip() for line in update.strips]
    return "\n".join(lines) + "\n"


def check(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("LANRAY_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"no snapshot {path}: run with LANRAY_UPDATE_SNAPSHOTS=1 to make it")
    assert text == path.read_text(), f"screen differs from {path}:\n{text}"


async def test_snapshot_menu() -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        check("menu", screen_text(app))


async def test_snapshot_host_form(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cluster_name: atelier\nlend:\n  cpus: 3\n")
    app = LanrayApp(cfg, watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("h")
        await started(pilot, HostFormScreen)
        check("host_form", screen_text(app))


async def test_snapshot_cluster() -> None:
    fake = FakeAgent()
    fake.logs["ray"] = [f"ray log line {i}" for i in range(30)]
    fake.start()
    try:
        app = LanrayApp(watch=quiet_lan)
        async with app.run_test(size=SIZE) as pilot:
            screen = await attached(pilot)
            await wait_for(pilot, lambda: screen.pane("ray").view.total == 30, "the log")
            await wait_for(
                pilot, lambda: "7-tiger" in screen_text(app), "the join code in the header"
            )
            check("cluster", screen_text(app))
    finally:
        fake.stop()


async def test_snapshot_new_job_fits_80x24_under_term_linux(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole new-job form at 80x24 on a Linux console: the list, every field down to
    Name, the Queue button, and the submit key in the footer."""
    monkeypatch.setenv("TERM", "linux")
    fake = FakeAgent()
    fake.start()
    try:
        app = LanrayApp(watch=quiet_lan)
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot)
            await pilot.press("4", "n")
            await started(pilot, NewJobScreen)
            text = screen_text(app)
            for shown in ("New job", "Another script", "Script", "Command", "GPUs", "Name"):
                assert shown in text, shown
            assert "Queue (ctrl+s)" in text  # the button
            assert text.splitlines()[-1].lstrip().startswith("esc Back  ^s Queue the job")
            check("new_job", text)
    finally:
        fake.stop()
