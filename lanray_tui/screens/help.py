"""Every key of the screen below, gathered from the bindings themselves (so it stays true)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static

# Keys Textual itself provides on every screen.
BUILT_IN = (
    ("ctrl+p", "command palette (every action by name)"),
    ("tab / shift+tab", "move between panes and fields"),
    ("↑ ↓ PgUp PgDn Home End", "move and scroll in lists and logs"),
    ("ctrl+q", "quit"),
)

WHERE = {
    "LanrayApp": "everywhere",
    "LogPane": "log pane",
    "LogView": "log pane",
    "JobTable": "jobs pane",
}


def key_entries(screen: Screen[object]) -> list[tuple[str, str, str]]:
    """(keys, what it does, where) for the app, ``screen`` and the widgets on it."""
    app = screen.app
    nodes: list[DOMNode] = [app, screen, *screen.walk_children()]
    seen_classes: set[type] = set()
    out: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for node in nodes:
        cls = type(node)
        if cls in seen_classes or not cls.__module__.startswith("lanray_tui"):
            continue
        seen_classes.add(cls)
        where = WHERE.get(cls.__name__, "this screen")
        for binding in Binding.make_bindings(cls.__dict__.get("BINDINGS", [])):
            if not binding.description:
                continue
            keys = app.get_key_display(binding)
            if (keys, binding.description) in seen:
                continue
            seen.add((keys, binding.description))
            out.append((keys, binding.description, where))
    out += [(k, d, "everywhere") for k, d in BUILT_IN]
    return out


class HelpScreen(ModalScreen[None]):
    """Lists the keys; Esc, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def __init__(self, entries: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.entries = entries

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="dialog"):
            yield Static("Keys (Esc closes)", classes="screen-title")
            table: DataTable[str] = DataTable(id="help-keys", cursor_type="row")
            table.add_columns("Key", "Does", "Where")
            for keys, what, where in self.entries:
                table.add_row(keys, what, where)
            yield table

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def action_close(self) -> None:
        self.dismiss(None)
