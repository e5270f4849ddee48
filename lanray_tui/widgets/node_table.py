"""The cluster's nodes, one row each; nodes that died (or vanished) stay listed, dimmed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import DataTable

if TYPE_CHECKING:
    from ..core.models import NodeInfo

COLUMNS = ("Name", "IP", "Role", "State", "Link", "Lending", "CPUs", "CPU%", "Mem%", "GPUs")


def _num(value: float) -> str:
    return f"{value:g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


class NodeTable(DataTable[Text]):
    """Rows keyed by Ray node id. :meth:`update_nodes` keeps the cursor on its node."""

    DEFAULT_CSS = """
    NodeTable { height: auto; max-height: 12; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._known: dict[str, tuple[NodeInfo, bool]] = {}  # id -> (node, still listed)
        self._shown: list[tuple[str, Sequence[str], bool]] = []

    def on_mount(self) -> None:
        for label in COLUMNS:
            self.add_column(label, key=label.lower())

    @property
    def nodes(self) -> list[NodeInfo]:
        return [node for node, _ in self._known.values()]

    def alive_count(self) -> int:
        return sum(1 for node, listed in self._known.values() if listed and node.state == "ALIVE")

    def update_nodes(self, nodes: list[NodeInfo]) -> None:
        """Show this poll's nodes; ones seen before but not listed now read ``gone``."""
        listed = {n.node_id for n in nodes}
        for node_id, (node, _) in list(self._known.items()):
            if node_id not in listed:
                self._known[node_id] = (node, False)
        for n in nodes:
            self._known[n.node_id] = (n, True)
        rows = sorted(
            self._known.values(),
            key=lambda item: (
                not item[1] or item[0].state != "ALIVE",
                item[0].role != "head",
                item[0].name,
                item[0].ip,
            ),
        )
        shown: list[tuple[str, Sequence[str], bool]] = []
        for node, still in rows:
            state = node.state if still else "gone"
            cells = (
                node.name,
                node.ip,
                node.role,
                state,
                node.link,
                node.lending or "n/a",
                _num(node.cpus),
                _pct(node.cpu_pct),
                _pct(node.mem_pct),
                _num(node.gpus),
            )
            shown.append((node.node_id, cells, still and node.state == "ALIVE"))
        if shown == self._shown:
            return
        self._shown = shown
        keep = None
        if self.row_count and 0 <= self.cursor_row < len(self._shown_keys()):
            keep = self._shown_keys()[self.cursor_row]
        self.clear()
        for node_id, row, alive in shown:
            style = "" if alive else "dim"
            self.add_row(*(Text(c, style=style) for c in row), key=node_id)
        if keep is not None and keep in self._known:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def _shown_keys(self) -> list[str]:
        return [str(row.key.value) for row in self.ordered_rows]
