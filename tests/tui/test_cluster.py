"""The cluster screen against a real Unix-socket stand-in for the agent (see the fake)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from types import FrameType

import pytest
from textual.widgets import TabbedContent

from lanray_tui.app import LanrayApp
from lanray_tui.screens.cluster import ClusterScreen
from lanray_tui.screens.confirm import ConfirmScreen
from lanray_tui.screens.help import HelpScreen
from lanray_tui.screens.menu import MenuScreen
from lanray_tui.widgets.header import ClusterHeader
from lanray_tui.widgets.log_pane import LogPane
from lanray_tui.widgets.node_table import NodeTable
from tests.helpers.fake_agent import FakeAgent, node_json
from tests.helpers.tui import attached, quiet_lan, started, wait_for

SIZE = (80, 24)


def threads_in_stream() -> int:
    """Threads now inside ControlClient.stream (blocked reading the agent's socket)."""
    count = 0
    for frame in sys._current_frames().values():
        f: FrameType | None = frame
        while f is not None:
            if f.f_code.co_name == "stream" and f.f_code.co_filename.endswith("control.py"):
                count += 1
                break
            f = f.f_back
    return count


@pytest.fixture()
def fake() -> Iterator[FakeAgent]:
    agent = FakeAgent().start()
    yield agent
    agent.stop()


def header_text(app: LanrayApp) -> str:
    return app.screen.query_one(ClusterHeader).text().plain


async def test_reattaches_and_shows_nodes_header_and_code(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        table = screen.query_one(NodeTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows[0][:4] == ["alpha", "10.9.0.1", "head", "ALIVE"]
        assert rows[1][:4] == ["beta", "10.9.0.2", "worker", "ALIVE"]
        assert rows[2][:4] == ["gamma", "10.9.0.3", "worker", "DEAD"]
        assert table.get_row_at(2)[0].style == "dim"  # dead nodes stay listed, dimmed

        await wait_for(pilot, lambda: "7-tiger-canvas" in header_text(app), "the join code")
        text = header_text(app)
        assert "testlab" in text and "10.9.0.1:6379" in text
        assert "2 nodes (+1 dead)" in text
        assert "8 CPUs" in text and "1 GPU" in text and "16.0 GiB" in text
        assert "free: not available yet" in text

        # Polls keep coming, one after the other, and pick up changes.
        fake.nodes.append(node_json("delta", "10.9.0.4"))
        await wait_for(pilot, lambda: table.row_count == 4, "the new node")
        assert "3 nodes" in header_text(app)
        # A node the head forgets stays listed as gone.
        fake.nodes = [n for n in fake.nodes if n["name"] != "gamma"]
        await wait_for(
            pilot,
            lambda: any(str(table.get_row_at(i)[3]) == "gone" for i in range(table.row_count)),
            "gamma gone",
        )
        await pilot.press("q")
    assert len(fake.ops_named("status")) >= 3


async def test_join_code_not_available_yet(fake: FakeAgent) -> None:
    fake.code = None  # the agent answers "bad request"
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await wait_for(
            pilot, lambda: "join code: not available yet" in header_text(app), "the note"
        )


async def test_logs_stream_into_the_panes(fake: FakeAgent) -> None:
    fake.logs["agent"] = ["agent says hi"]
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        ray = screen.pane("ray").view
        await wait_for(pilot, lambda: ray.total == 2, "the backlog")
        assert ray.kept_lines() == ["ray line 1", "ray line 2"]
        fake.push_log("ray", "live line")
        await wait_for(pilot, lambda: ray.total == 3, "a live line")
        assert ray.kept_lines()[-1] == "live line"
        assert screen.pane("agent").view.kept_lines() == ["agent says hi"]
        streams = fake.ops_named("logs")
        assert {(s["source"], s["lines"], s["follow"]) for s in streams} == {
            ("ray", 200, True),
            ("agent", 200, True),
        }

        await pilot.press("3")
        assert screen.query_one(TabbedContent).active == "tab-agent"
        await pilot.press("t")  # log keys reach the pane on show
        assert screen.pane("agent").view.show_timestamps


async def test_help_on_the_cluster_screen_lists_its_keys(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("question_mark")
        await started(pilot, HelpScreen)
        described = {what for _, what, _ in app.screen.entries}  # type: ignore[attr-defined]
        assert {"Leave cluster", "Filter", "Wrap", "Time", "Save", "New job"} <= described
        await pilot.press("escape")
        await started(pilot, ClusterScreen)


async def test_leave_asks_then_stops_the_agent_and_shows_the_menu(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("L")
        await started(pilot, ConfirmScreen)
        await pilot.press("n")
        await started(pilot, ClusterScreen)
        assert not fake.ops_named("leave")

        await pilot.press("L")
        await started(pilot, ConfirmScreen)
        await pilot.press("y")
        await started(pilot, MenuScreen)
        assert len(fake.ops_named("leave")) == 1
        assert not fake.paths.socket.exists()


async def test_agent_that_goes_away_is_reported(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        fake.stop()
        await wait_for(pilot, lambda: "agent has stopped" in header_text(app), "the report")
        screen.pane("ray").view.focus()  # Esc passes through a log without a filter
        await pilot.press("escape")
        await started(pilot, MenuScreen)


async def test_quitting_leaves_no_worker_blocked(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        await wait_for(pilot, lambda: screen.pane("ray").view.total == 2, "the log streams")
        assert threads_in_stream() == 2  # both log streams wait in a blocking read
        await pilot.press("q")
    # Leaving the screen interrupted them: no thread stays blocked (or holds up the exit).
    for _ in range(100):
        if threads_in_stream() == 0:
            break
        await asyncio.sleep(0.02)
    assert threads_in_stream() == 0


async def test_log_pane_is_in_the_ray_tab_by_default(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        assert screen.query_one(TabbedContent).active == "tab-ray"
        assert isinstance(screen.pane("ray"), LogPane)


def test_header_counts_nodes_by_state_and_names_failed_pairing() -> None:
    from lanray_tui.core.models import AgentInfo, node_from_status
    from lanray_tui.widgets.header import ClusterHeader
    from tests.helpers.fake_agent import agent_json

    rows = [
        node_json("alpha", "10.9.0.1", role="head"),
        node_json("beta", "10.9.0.2", state="WITHHELD"),
        node_json("gamma", "10.9.0.3", state="DEAD"),
        node_json("delta", "10.9.0.4", state="WITHHELD"),
    ]
    header = ClusterHeader(AgentInfo.from_json(agent_json()))
    header._redraw = lambda: None  # type: ignore[method-assign]  # not mounted: text() alone
    header.set_nodes([node_from_status(r) for r in rows])
    header.set_code("7-tiger-canvas", 300, failures="3 failed pairing attempts from 10.9.0.66")
    text = header.text().plain
    assert "1 node (+1 dead, 2 withheld)" in text
    assert "join code 7-tiger-canvas" in text
    assert "! 3 failed pairing attempts from 10.9.0.66" in text
