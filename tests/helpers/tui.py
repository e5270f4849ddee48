"""Shared pieces of the TUI tests: quiet discovery, waiting in a pilot, the attached screen."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from lanray_tui.core.discovery import FoundHost
from lanray_tui.screens.cluster import ClusterScreen


def quiet_lan(cfg: Any, on_host: Callable[[FoundHost], None], stop: threading.Event) -> None:
    """Discovery that finds nothing (tests never touch the LAN)."""
    stop.wait()


async def wait_for(pilot: Pilot[int], check: Callable[[], bool], what: str) -> None:
    for _ in range(300):
        if check():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def started(pilot: Pilot[int], screen_type: type) -> None:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, screen_type), screen_type.__name__)
    await pilot.pause()


async def attached(pilot: Pilot[int]) -> ClusterScreen:
    await started(pilot, ClusterScreen)
    screen = pilot.app.screen
    assert isinstance(screen, ClusterScreen)
    await wait_for(pilot, lambda: screen.polls >= 1, "the first status poll")
    await pilot.pause()
    return screen
