"""A join that fails runs the network doctor in a worker and shows its checklist."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import Static

from lanray_tui.app import LanrayApp
from lanray_tui.core import doctor, doctor_run, lifecycle
from lanray_tui.core.errors import LanrayError
from lanray_tui.screens.join import JoinScreen
from lanray_tui.screens.menu import MenuScreen
from lanray_tui.widgets.steps import StepList
from tests.helpers.tui import quiet_lan, started, wait_for


async def test_a_failed_join_shows_the_doctors_checklist(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def join_with_token(cfg: Any, address: str, token: str, **kw: Any) -> Any:
        raise LanrayError("the agent exited: cannot reach 10.9.0.9:6379")

    def diagnose(cfg: Any, target: doctor_run.Target) -> doctor.Report:
        asked.append(target.address)
        ports = doctor.RayPorts({6379: "GCS"}, (10002, 10100))
        found = {6379: doctor.TIMEOUT}
        fw = doctor.Firewall("ufw")
        return doctor.Report(target.address, [doctor.ports_to_host(ports, found, "10.9.0.9", fw)])

    monkeypatch.setattr(lifecycle, "join_with_token", join_with_token)
    monkeypatch.setattr(doctor_run, "diagnose", diagnose)
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=(100, 40)) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("j")
        await started(pilot, JoinScreen)
        await pilot.press("a", *"10.9.0.9:6379", "enter", *"sekrit", "enter")
        steps = app.screen.query_one(StepList)
        await wait_for(pilot, lambda: bool(steps.error), "the join to fail")
        panel = app.screen.query_one("#join-doctor", Static)
        await wait_for(pilot, lambda: "✘" in str(panel.render()), "the checklist")
        text = str(panel.render())
        assert asked == ["10.9.0.9"]
        assert "Network doctor, host 10.9.0.9:" in text
        assert "6379 GCS: dropped: timeout" in text
        assert "fix: on the host 10.9.0.9: sudo ufw allow 6379/tcp" in text


async def test_the_test_suite_never_lets_the_doctor_onto_the_lan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def join_with_token(cfg: Any, address: str, token: str, **kw: Any) -> Any:
        raise LanrayError("no")

    monkeypatch.setattr(lifecycle, "join_with_token", join_with_token)
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=(100, 40)) as pilot:
        await started(pilot, MenuScreen)
        await pilot.press("j")
        await started(pilot, JoinScreen)
        await pilot.press("a", *"10.9.0.9", "enter", *"sekrit", "enter")
        panel = app.screen.query_one("#join-doctor", Static)
        await wait_for(pilot, lambda: "LANRAY_NO_LAN" in str(panel.render()), "the refusal")
        assert "the doctor sends nothing to 10.9.0.9" in str(panel.render())
