"""The start menu, shown when no agent runs on this node: host, join or quit."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from .. import messages


class MenuScreen(Screen[None]):
    """Three choices, by key (h, j, q) or with the arrows and Enter."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("h", "host", "Host a cluster"),
        Binding("j", "join", "Join a cluster"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, problem: str = "") -> None:
        super().__init__()
        self.problem = problem

    def compose(self) -> ComposeResult:
        with Vertical(id="menu-box"):
            yield Static("lanray-tui", id="menu-title")
            yield Static(
                "Turn the machines on this LAN into one Ray cluster.\n"
                "No agent runs on this node yet.",
                id="menu-blurb",
            )
            yield OptionList(
                Option("Host a cluster   h", id="host"),
                Option("Join a cluster   j", id="join"),
                Option("Quit             q", id="quit"),
                id="menu-options",
            )
            problem = Static(self.problem, id="menu-problem", markup=False)
            problem.display = bool(self.problem)
            yield problem
            # A line instead of a Footer: the keys are on the options already, and the
            # first frame comes sooner without a dozen more widgets to style.
            yield Static("↑↓ Enter choose · ? keys · ctrl+p commands", id="menu-keys")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def set_problem(self, problem: str) -> None:
        """Show (or clear) a problem, e.g. a config error found after the menu appeared."""
        self.problem = problem
        widget = self.query_one("#menu-problem", Static)
        widget.update(problem)
        widget.display = bool(problem)

    @on(OptionList.OptionSelected, "#menu-options")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        {"host": self.action_host, "join": self.action_join, "quit": self.app.exit}[
            event.option_id or "quit"
        ]()

    def action_host(self) -> None:
        self.post_message(messages.ShowHostForm())

    def action_join(self) -> None:
        self.post_message(messages.ShowJoin())

    def commands(self) -> list[tuple[str, str, str]]:
        """(title, help, action) for the command palette."""
        return [
            ("Host a cluster", "Start a Ray head on this machine", "host"),
            ("Join a cluster", "Join a cluster found on the LAN", "join"),
        ]
