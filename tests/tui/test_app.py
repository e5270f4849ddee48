"""The app without a running agent: menu keys, host form, join screen, help, palette."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, RadioButton

from lanray_tui import messages
from lanray_tui.app import LanrayApp
from lanray_tui.core import lifecycle
from lanray_tui.core.discovery import FoundHost
from lanray_tui.core.errors import LanrayError
from lanray_tui.screens.cluster import ClusterScreen
from lanray_tui.screens.help import HelpScreen
from lanray_tui.screens.host_form import HostFormScreen
from lanray_tui.screens.join import JoinScreen
from lanray_tui.screens.menu import MenuScreen
from lanray_tui.widgets.host_list import HostList
from lanray_tui.widgets.steps import StepList
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.tui import quiet_lan, started, wait_for

SIZE = (80, 24)


def found(name: str, address: str, **changes: Any) -> FoundHost:
    fields: dict[str, Any] = {
        "host_name": f"{name}-host",
        "address": address,
        "cluster_name": name,
        "cluster_id": f"id-{name}",
        "ray_version": "2.60.0",
        "python_version": "3.11",
        "compatible": True,
        "why_not": "",
        "interface": "eth0",
        "verified": "unverified",
        "gcs_port": 6379,
        "dashboard_port": 8265,
        "pairing_port": 47475,
        "node_count": 2,
        "free_cpus": 6.0,
        "free_gpus": 0.0,
        "last_seen": 1e12,  # far future: never stale during the test
    }
    fields.update(changes)
    return FoundHost(**fields)


@pytest.fixture()
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


# ----- menu --------------------------------------------------------------------------------


async def test_menu_when_no_agent_runs_and_its_keys() -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("h")
        await started(pilot, HostFormScreen)
        await pilot.press("escape")
        await started(pilot, MenuScreen)
        await pilot.press("j")
        await started(pilot, JoinScreen)
        await pilot.press("escape")
        await started(pilot, MenuScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_menu_arrows_and_enter() -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("down", "enter")
        await started(pilot, JoinScreen)
        await pilot.press("escape")
        await started(pilot, MenuScreen)
        await pilot.press("down", "down", "enter")
        await pilot.pause()
    assert not app.is_running


async def test_a_bad_config_is_shown_on_the_menu(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lend:\n  cpus: lots\n")
    app = LanrayApp(bad, watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        problem = app.screen.query_one("#menu-problem")
        await wait_for(pilot, lambda: "lend.cpus" in str(problem.render()), "the problem")
        await pilot.press("h")
        await pilot.pause()
        assert isinstance(app.screen, MenuScreen)


# ----- host form ---------------------------------------------------------------------------


async def test_host_form_defaults_come_from_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cluster_name: atelier\nlend:\n  cpus: 3\n  memory_gb: 1.5\n")
    app = LanrayApp(cfg, watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("h")
        await started(pilot, HostFormScreen)
        screen = app.screen
        values = {i.id: i.value for i in screen.query(Input)}
        assert values == {"name": "atelier", "cpus": "3", "gpus": "", "memory": "1.5"}
        assert screen.query_one("#gpus", Input).placeholder == "all"
        assert isinstance(screen, HostFormScreen)
        extra, checked = screen.read_form()
        assert extra == []  # the defaults need no options for the agent
        assert checked["cluster_name"] == "atelier" and checked["runtime.kind"] == "native"
        screen.query_one("#runtime-docker", RadioButton).value = True
        await pilot.pause()
        extra, checked = screen.read_form()
        assert extra == ["--runtime", "docker"] and checked["runtime.kind"] == "docker"


async def test_host_form_refuses_what_the_config_would(tmp_path: Path) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("h")
        await started(pilot, HostFormScreen)
        app.screen.query_one("#cpus", Input).value = "99999"
        await pilot.press("enter")
        steps = app.screen.query_one(StepList)
        assert "lend.cpus" in steps.error and "4096" in steps.error
        assert not app.screen.query_one("#name", Input).disabled


async def test_host_form_starts_the_agent_and_shows_the_cluster(
    monkeypatch: pytest.MonkeyPatch, live_pid: int
) -> None:
    fake = FakeAgent()
    fake.agent["pid"] = live_pid
    fake.states = ["starting", "starting", "ready"]
    spawned: list[tuple[str, list[str]]] = []

    def spawn(paths: Any, role: str, config_file: Any, extra: Any = ()) -> int:
        spawned.append((role, list(extra)))
        fake.start()  # the "agent" comes up and answers on the control socket
        return live_pid

    monkeypatch.setattr(lifecycle, "spawn_agent", spawn)
    app = LanrayApp(watch=quiet_lan)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot, MenuScreen)
            await pilot.press("h")
            await started(pilot, HostFormScreen)
            app.screen.query_one("#cpus", Input).value = "2"
            app.screen.query_one("#name", Input).focus()
            await pilot.press("ctrl+a", "ctrl+k", *"studio", "enter")
            await started(pilot, ClusterScreen)
            assert spawned == [("host", ["--name", "studio", "--cpus", "2"])]
            await pilot.press("q")
    finally:
        fake.stop()


async def test_host_form_shows_why_the_start_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(paths: Any) -> None:
        raise LanrayError("this node already hosts cluster 'x' (agent pid 1, head 10.0.0.1:6379)")

    monkeypatch.setattr(lifecycle, "refuse_if_running", refuse)
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("h")
        await started(pilot, HostFormScreen)
        await pilot.press("enter")
        steps = app.screen.query_one(StepList)
        await wait_for(pilot, lambda: bool(steps.error), "the error")
        assert "already hosts" in steps.error
        assert not app.screen.query_one("#name", Input).disabled


# ----- join --------------------------------------------------------------------------------


async def test_join_lists_hosts_and_joins_with_a_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def lan(cfg: Any, on_host: Callable[[FoundHost], None], stop: threading.Event) -> None:
        on_host(found("atelier", "10.9.0.5", verified="verified"))
        on_host(
            found(
                "oldray",
                "10.9.0.6",
                compatible=False,
                why_not="host runs Ray 2.1.0 on Python 3.9",
                ray_version="2.1.0",
            )
        )
        stop.wait()

    calls: list[tuple[Any, ...]] = []

    def join_with_code(cfg: Any, target: Any, code: str, progress: Any = None, **kw: Any) -> Any:
        calls.append((target, code))
        progress("pairing with 10.9.0.5")
        raise LanrayError("the host refused the code (wrong code?)")

    monkeypatch.setattr(lifecycle, "join_with_code", join_with_code)
    app = LanrayApp(watch=lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("j")
        await started(pilot, JoinScreen)
        hosts = app.screen.query_one(HostList)
        await wait_for(pilot, lambda: hosts.row_count == 2, "two hosts")
        cells = [hosts.get_row_at(i) for i in range(2)]
        assert [str(c[0]) for c in cells] == ["atelier", "oldray"]
        assert str(cells[0][5]) == "yes" and str(cells[0][6]) == "verified"
        assert str(cells[1][5]).startswith("no")

        await pilot.press("down")  # the incompatible one says why
        assert "Ray 2.1.0 on Python 3.9" in str(app.screen.query_one("#host-detail").render())
        await pilot.press("enter")
        assert not app.screen.query_one("#code-form").display

        await pilot.press("up", "enter")
        assert app.screen.query_one("#code-form").display
        await pilot.press(*"7-tiger-canvas", "enter")
        steps = app.screen.query_one(StepList)
        await wait_for(pilot, lambda: bool(steps.error), "the join to fail")
        assert calls == [("10.9.0.5", "7-tiger-canvas")]
        assert "pairing with 10.9.0.5" in steps.steps
        assert "wrong code" in steps.error


async def test_join_by_address_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def join_with_token(cfg: Any, address: str, token: str, **kw: Any) -> Any:
        calls.append((address, token, cfg["runtime.kind"], list(kw["extra"])))
        raise LanrayError("the agent exited: cannot reach 10.9.0.9:6379")

    monkeypatch.setattr(lifecycle, "join_with_token", join_with_token)
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("j")
        await started(pilot, JoinScreen)
        await pilot.press("a")
        assert app.screen.query_one("#manual-form").display
        await pilot.press(*"10.9.0.9", "enter", *"sekrit", "enter")
        steps = app.screen.query_one(StepList)
        await wait_for(pilot, lambda: bool(steps.error), "the join to fail")
        assert calls == [("10.9.0.9", "sekrit", "native", [])]
        assert "cannot reach" in steps.error
        # the same join with Ray in a container: the agent is told so
        app.screen.query_one("#runtime-docker", RadioButton).value = True
        await pilot.pause()
        app.screen.query_one("#token", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(calls) == 2, "the second try")
        assert calls[1] == ("10.9.0.9", "sekrit", "docker", ["--runtime", "docker"])


async def test_join_says_when_discovery_stops() -> None:
    def no_sockets(cfg: Any, on_host: Callable[[FoundHost], None], stop: threading.Event) -> None:
        raise PermissionError("no permission for broadcast sockets")

    app = LanrayApp(watch=no_sockets)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("j")
        await started(pilot, JoinScreen)
        state = app.screen.query_one("#discovery-state")
        await wait_for(
            pilot, lambda: "LAN discovery stopped: no permission" in str(state.render()), "the note"
        )
        assert app.screen.query_one("#manual-form").display  # typing an address is offered


# ----- help and palette --------------------------------------------------------------------


async def test_help_lists_the_keys_of_the_screen() -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("question_mark")
        await started(pilot, HelpScreen)
        entries = app.screen.entries  # type: ignore[attr-defined]
        described = {what for _, what, _ in entries}
        assert {"Host a cluster", "Join a cluster", "Quit", "Keys"} <= described
        assert any("command palette" in what for _, what, _ in entries)
        await pilot.press("escape")
        await started(pilot, MenuScreen)


async def test_command_palette_offers_the_screen_actions() -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Host a cluster" in titles and "Keys" in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "CommandPalette"
        await pilot.press(*"Host a c")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await started(pilot, HostFormScreen)


def test_messages_describe_keeps_one_line() -> None:
    assert messages.describe(ValueError("first\nsecond")) == "first"
    assert messages.describe(ValueError("")) == "ValueError"


def test_importing_the_ui_is_light() -> None:
    code = (
        "import sys, lanray_tui.app, lanray_tui.screens.cluster, lanray_tui.screens.join, "
        "lanray_tui.screens.host_form, lanray_tui.screens.menu, lanray_tui.screens.help; "
        "print(' '.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    heavy = {m for m in loaded if m.split(".")[0] in ("ray", "docker", "scapy", "pynvml")}
    assert not heavy
    # The core's heavier modules load in workers, after the first frame.
    assert "lanray_tui.core.lifecycle" not in loaded
    assert "lanray_tui.core.discovery" not in loaded


def test_quitting_does_not_wait_for_a_blocked_worker() -> None:
    code = (
        "import threading; from lanray_tui.app import _exit_even_if_workers_block; "
        "threading.Thread(target=threading.Event().wait).start(); "
        "_exit_even_if_workers_block(3)"
    )
    out = subprocess.run([sys.executable, "-c", code], timeout=20)
    assert out.returncode == 3


async def test_start_on_the_host_form_or_join_screen() -> None:
    for initial, screen in (("host", HostFormScreen), ("join", JoinScreen)):
        app = LanrayApp(initial=initial, watch=quiet_lan)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot, screen)
            await pilot.press("escape")
            await started(pilot, MenuScreen)


async def test_a_key_pressed_before_the_config_loads_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lanray_tui.core import config

    real_load = config.load
    gate = threading.Event()

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        gate.wait(10)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(config, "load", slow_load)
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, MenuScreen)  # the menu does not wait for the config
        await pilot.press("h")
        assert isinstance(app.screen, MenuScreen)
        gate.set()
        await started(pilot, HostFormScreen)


async def test_a_step_that_updates_the_one_before_replaces_it() -> None:
    from textual.app import App

    class One(App[None]):
        def compose(self) -> Any:
            yield StepList()

    app = One()
    async with app.run_test():
        steps = app.query_one(StepList)
        _add_steps(steps)
    assert steps.steps == [
        "starting Ray",
        "pulling reg:5000/ray:2: 2 of 3 layers done, 6.1 of 9.0 MB",
        "pulled reg:5000/ray:2",
        "Ray is ready",
    ]


def _add_steps(steps: StepList) -> None:
    for step in (
        "starting",
        "pulling reg:5000/ray:2",
        "pulling reg:5000/ray:2: 0 of 3 layers done, 0.0 of 9.0 MB",
        "pulling reg:5000/ray:2: 2 of 3 layers done, 6.1 of 9.0 MB",
        "pulled reg:5000/ray:2",
        "ready",
    ):
        steps.add(step)
