"""The nodes pane (sparklines, GPUs, runtime), node details, the header's free resources and
the keys that pause, restart or stop this node's Ray, against the fake agent (the real agent
behind them: tests/test_health.py and tests/test_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.widgets import Static, TabbedContent

from lanray_tui.app import LanrayApp
from lanray_tui.core.resources import GpuProcess, GpuSample, Reading, Sample
from lanray_tui.core.sparkline import bar, downsample
from lanray_tui.screens.cluster import ClusterScreen
from lanray_tui.screens.confirm import ConfirmScreen
from lanray_tui.screens.node_details import NodeDetailsScreen
from lanray_tui.widgets.node_table import NodeTable
from tests.helpers.fake_agent import FakeAgent, node_json
from tests.helpers.tui import attached, quiet_lan, started, wait_for

SIZE = (100, 30)
GIB = 2**30


@pytest.fixture()
def fake() -> Iterator[FakeAgent]:
    agent = FakeAgent().start()
    yield agent
    agent.stop()


def loaded(fake: FakeAgent) -> None:
    head = fake.nodes[0]
    head["runtime"] = {"kind": "docker", "container": "lanray-head-1", "container_state": "running"}
    head["lending"] = {"state": "lending", "reason": "lent to the cluster"}
    head["resources"] = Sample(
        time=1.0,
        cpu_count=8,
        cpu_percent=80.0,
        owner_cpu_percent=5.0,
        owner_load=0.4,
        ray_cpu_percent=75.0,
        load_1m=1.5,
        memory_used=2 * GIB,
        memory_total=8 * GIB,
        battery_percent=Reading.na("no battery"),
        plugged=None,
        cpu_temperature_c=Reading(55.0),
        gpus=(
            GpuSample(
                index=0,
                uuid="GPU-0",
                name="NVIDIA GeForce RTX 4070 Laptop GPU",
                utilization=Reading(5.0),
                memory_used=Reading(1 * GIB),
                memory_total=Reading(4 * GIB),
                temperature_c=Reading(48),
                power_w=Reading.na("not supported"),
                processes=(
                    GpuProcess(77, "ray::train", GIB, ray=True, kind="compute"),
                    GpuProcess(88, "game.exe", None, ray=False, kind="graphics"),
                ),
            ),
        ),
    ).to_json()
    fake.nodes[1]["resources"] = Sample(
        time=1.0,
        cpu_count=4,
        cpu_percent=3.0,
        owner_cpu_percent=1.0,
        owner_load=0.0,
        ray_cpu_percent=2.0,
        load_1m=0.1,
        memory_used=GIB,
        memory_total=8 * GIB,
        battery_percent=Reading.na("no battery"),
        plugged=None,
        cpu_temperature_c=Reading.na("no sensor"),
        gpus_reason="NVML: no driver",
    ).to_json()


async def test_pause_restart_and_stop_keys_reach_the_agent(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("p")
        await wait_for(pilot, lambda: bool(fake.ops_named("pause")), "pause")
        await pilot.press("R")
        await wait_for(pilot, lambda: bool(fake.ops_named("restart_ray")), "restart")
        await pilot.press("S")
        await started(pilot, ConfirmScreen)
        assert "the whole cluster stops" in str(app.screen.query_one("#confirm-question").render())
        await pilot.press("y")
        await wait_for(pilot, lambda: bool(fake.ops_named("stop_ray")), "stop")
        fake.agent["lending"] = {"state": "stopped", "reason": "stopped by hand"}
        await wait_for(pilot, lambda: app.screen.agent.lending.get("state") == "stopped", "poll")
        await pilot.press("S")  # stopped: S starts it again, no question asked
        await wait_for(pilot, lambda: bool(fake.ops_named("resume")), "start")


async def test_nodes_pane_draws_sparklines_gpu_and_runtime(fake: FakeAgent) -> None:
    loaded(fake)
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=(160, 30)) as pilot:
        await attached(pilot)
        table = app.screen.query_one(NodeTable)
        screen = app.screen
        assert isinstance(screen, ClusterScreen)
        await wait_for(pilot, lambda: screen.polls >= 3, "three polls")
        row = [c.plain for c in table.get_row_at(0)]
        assert row[0] == "alpha"
        cpu, mem, gpu, runtime = row[7:11]
        assert cpu.endswith(" 80%") and any(ch in cpu for ch in "▁▂▃▄▅▆▇█")
        assert mem.endswith(" 25%")
        assert gpu.startswith(" ") or "5%" in gpu
        assert "mem 25%" in gpu and runtime == "docker running"
        tab = app.screen.query_one(TabbedContent).get_tab("tab-ray")
        assert str(tab.label) == "Logs: container (2)"  # this node's Ray is a container
        heavy = table.get_row_at(0)[7]
        assert any("red" in str(span.style) for span in heavy.spans)  # nvitop: 80% is heavy
        beta = [c.plain for c in table.get_row_at(1)]
        assert beta[7].endswith("  3%") and beta[9] == "none"  # no GPU lent: nothing to show


async def test_header_shows_what_is_free(fake: FakeAgent) -> None:
    from lanray_tui.widgets.header import ClusterHeader

    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        header = app.screen.query_one(ClusterHeader)
        assert "free: not available yet" in header.text().plain  # not known: not made up
        fake.free = {"free_cpus": 3.0, "free_gpus": 0.0, "free_memory_gb": 4.5}
        await wait_for(pilot, lambda: "free 3 CPU · 0 GPU · 4.5 GiB" in header.text().plain, "")


async def test_node_details_show_bars_gpus_processes_and_lending(fake: FakeAgent) -> None:
    loaded(fake)
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        await wait_for(pilot, lambda: screen.polls >= 2, "two polls")
        screen.query_one(NodeTable).focus()
        await pilot.press("enter")  # the head, first row
        await started(pilot, NodeDetailsScreen)
        text = str(app.screen.query_one("#node-details", Static).render())
        assert "alpha" in text and "runtime docker running" in text
        assert "lending: lending (lent to the cluster)" in text
        assert "80.0%" in text and "Ray 75%, owner 5%" in text and "2.0 of 8.0 GiB" in text
        assert "RTX 4070" in text and "48 °C" in text and "n/a (not supported)" in text
        assert "77 ray::train (Ray, compute" in text and "88 game.exe (owner, graphics" in text
        assert "battery n/a (no battery), power: n/a" in text and "CPU temperature 55 °C" in text
        assert "█" in text  # a bar
        await pilot.press("escape")
        await started(pilot, ClusterScreen)


def test_bars_and_downsampling() -> None:
    assert bar(50.0, 8) == "████····"
    assert bar(None, 4) == "    " and bar(100.0, 3) == "███" and bar(6.25, 2) == "▏·"
    assert downsample([1.0, 3.0, None, None, 5.0, 7.0], 3) == [2.0, None, 6.0]
    assert downsample([1.0, None], 8) == [1.0, None]


async def test_nodes_pane_puts_problems_first(fake: FakeAgent) -> None:
    lost = node_json("lost", "10.9.0.9")
    lost["link"] = "UNREACHABLE"
    busy = node_json("busy", "10.9.0.8")
    busy["lending"] = {"state": "owner-active", "reason": "owner back, draining (41 s left)"}
    withheld = node_json("away", "10.9.0.7", state="WITHHELD")
    withheld["lending"] = {"state": "on-battery", "reason": "on battery"}
    fake.nodes = [
        node_json("zeta", "10.9.0.6", state="DEAD"),
        node_json("alpha", "10.9.0.1", role="head"),
        node_json("beta", "10.9.0.2"),
        busy,
        node_json("again", "10.9.0.5", state="RESTARTING"),
        withheld,
        lost,
    ]
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        table = app.screen.query_one(NodeTable)
        await wait_for(pilot, lambda: table.row_count == 7, "seven nodes")
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        names = [row[0].plain for row in rows]
        assert names == ["lost", "away", "again", "busy", "alpha", "beta", "zeta"]
        by_name = {row[0].plain: row for row in rows}
        # Withheld and restarting nodes wait on purpose: not dimmed like the dead, and each
        # state in a style of its own.
        away, again = by_name["away"], by_name["again"]
        assert away[0].style != "dim" and again[0].style != "dim"
        away_style = {str(span.style) for span in away[3].spans}
        again_style = {str(span.style) for span in again[3].spans}
        assert away_style and again_style and away_style != again_style
        assert any("red" in str(span.style) for span in by_name["lost"][4].spans)
        assert by_name["zeta"][0].style == "dim"
        assert by_name["busy"][5].plain == "owner back, draining"
        assert away[5].plain == "on-battery"  # why it is withheld


def _sample(cpu: float) -> Sample:
    return Sample(
        time=1.0,
        cpu_count=4,
        cpu_percent=cpu,
        owner_cpu_percent=0.0,
        owner_load=0.0,
        ray_cpu_percent=cpu,
        load_1m=0.1,
        memory_used=GIB,
        memory_total=8 * GIB,
        battery_percent=Reading.na("no battery"),
        plugged=None,
        cpu_temperature_c=Reading.na("no sensor"),
        gpus=(),
    )


async def test_sixteen_nodes_sort_by_state_load_or_name_and_filter(fake: FakeAgent) -> None:
    nodes = [node_json("head", "10.9.0.1", role="head")]
    for i in range(2, 17):
        n = node_json(f"pc{i:02d}", f"10.9.0.{i}", state="DEAD" if i in (5, 9) else "ALIVE")
        n["resources"] = _sample(float(i * 5)).to_json()
        nodes.append(n)
    fake.nodes = nodes
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=(80, 24)) as pilot:
        await attached(pilot)
        table = app.screen.query_one(NodeTable)
        await wait_for(pilot, lambda: table.row_count == 16, "sixteen nodes")

        def names() -> list[str]:
            return [table.get_row_at(i)[0].plain for i in range(table.row_count)]

        assert names()[-2:] == ["pc05", "pc09"]  # problems first: the dead at the bottom
        assert "sorted: problems first (s)" in str(table.border_title)
        table.focus()
        await pilot.press("s")  # by state (then name): ALIVE, DEAD
        assert names()[0] == "head" and names()[-2:] == ["pc05", "pc09"]
        assert "sorted: state" in str(table.border_title)
        await pilot.press("s")  # by load, the busiest first
        assert names()[:3] == ["pc16", "pc15", "pc14"]
        await pilot.press("s")  # by name
        assert names() == sorted(names())
        await pilot.press("slash")
        assert "filter: ▏" in str(table.border_title)
        assert table.has_focus  # the table keeps the focus and takes the keys
        await pilot.press("s")  # typed into the filter, not a new order
        assert table.filter_text == "s" and "sorted: name" in str(table.border_title)
        await pilot.press("backspace", "p", "c", "1")
        await wait_for(pilot, lambda: table.row_count == 7, "the pc1x nodes")
        assert all(n.startswith("pc1") for n in names())
        assert "7 of 16 · filter: pc1▏" in str(table.border_title)
        await pilot.press("enter")  # keeps the filter
        assert table.has_focus and table.row_count == 7
        assert "7 of 16 matching 'pc1'" in str(table.border_title)
        await pilot.press("s")  # a key of the table again
        assert "sorted: problems first" in str(table.border_title)
        await pilot.press("slash", "escape")  # clears it
        assert table.row_count == 16 and table.has_focus
        assert "matching" not in str(table.border_title)
        await pilot.press("slash", "D", "E", "A", "D", "enter")  # states too, any case
        assert names() == ["pc05", "pc09"]
        await pilot.press("slash", "backspace", "backspace", "backspace", "backspace")
        await pilot.press("left_square_bracket", "enter")  # typed as it is, no markup
        assert "matching '['" in str(table.border_title) and table.row_count == 0


async def test_the_header_warns_from_ten_minutes_before_the_cluster_ends(
    fake: FakeAgent,
) -> None:
    import time

    from lanray_tui.widgets.header import ClusterHeader

    fake.ends_at = time.time() + 3600  # an hour left: no warning yet
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=(80, 24)) as pilot:
        await attached(pilot)
        header = app.screen.query_one(ClusterHeader)
        await pilot.pause(1.5)
        assert "the cluster ends" not in header.text().plain
        fake.ends_at = time.time() + 8 * 60 + 30
        await wait_for(pilot, lambda: "the cluster ends at" in header.text().plain, "warning")
        assert "(in 8 min)" in header.text().plain


def test_node_details_warn_when_rays_http_ports_are_open_to_the_lan() -> None:
    from lanray_tui.core.models import NodeInfo
    from lanray_tui.core.sparkline import History
    from lanray_tui.screens.node_details import details_text

    hist = (History(60), History(60), History(60))
    beta = node_json("beta", "10.9.0.2")
    assert "HTTP ports" not in details_text(NodeInfo(**beta), hist).plain
    warned = NodeInfo(**beta, guard_warning="Ray's HTTP ports are open: run X")
    assert "! Ray's HTTP ports are open: run X" in details_text(warned, hist).plain
