"""The cluster's nodes, one row each, with 60-second sparklines of CPU, memory and GPU.

Nodes that need a look sort to the top (unreachable, withheld, restarting, owner back);
nodes that died (or vanished) stay listed at the bottom, dimmed. Each poll (once a second)
adds a point to the node's histories; a sparkline draws the last 60 of them in 8 cells
(7.5 s a cell), coloured by nvitop's load levels. The figure beside it is always spelt
out, so the pane reads the same with NO_COLOR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual._types import SegmentLines
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.content import Content
from textual.widgets import DataTable

from ..core.sparkline import (
    CPU_THRESHOLDS,
    GPU_UTILIZATION_THRESHOLDS,
    MEMORY_UTILIZATION_THRESHOLDS,
    History,
    downsample,
    level,
    sparkline,
)

if TYPE_CHECKING:
    from ..core.models import NodeInfo

COLUMNS = (
    "Name", "IP", "Role", "State", "Link", "Lending", "CPUs", "CPU", "Memory", "GPU", "Runtime",
)  # fmt: skip
HISTORY_S = 60
SPARK_CELLS = 8
LEVEL_STYLE = {"light": "green", "moderate": "yellow", "heavy": "red", "n/a": ""}
#: A node that waits on purpose (its owner withholds it, or its Ray restarts): not dimmed
#: like the dead, its state in a colour of its own.
STATE_STYLE = {"WITHHELD": "bold magenta", "RESTARTING": "bold cyan"}
UNREACHABLE = "UNREACHABLE"  # the link of a node whose heartbeats stopped
UNREACHABLE_STYLE = "bold red"
OWNER_BACK = "owner-active"  # the lending state of a node whose owner came back


def attention(node: NodeInfo, still: bool = True) -> int:
    """Where a node sorts: problems first (unreachable, withheld, restarting, owner back),
    then the nodes at work, then the dead and the gone."""
    if not still:
        return 6
    if node.link == UNREACHABLE:
        return 0
    if node.state == "WITHHELD":
        return 1
    if node.state == "RESTARTING":
        return 2
    if node.lending == OWNER_BACK:
        return 3
    return 4 if node.state == "ALIVE" else 5


def lending_cell(node: NodeInfo) -> str:
    """The Lending column: the state, "owner back, draining" while a node whose owner
    came back drains, and "until 18:00" for a node lent until then."""
    if "draining" in node.lending_reason:
        what = "owner back" if node.lending == OWNER_BACK else node.lending
        return f"{what}, draining"
    if node.lending_until:
        return f"{node.lending} {node.lending_until}"
    return node.lending or "n/a"


def row_order(node: NodeInfo, still: bool) -> tuple[int, bool, str, str]:
    """The nodes pane's order: by :func:`attention`, the head first, then by name and IP."""
    return attention(node, still), node.role != "head", node.name, node.ip


def _load(node: NodeInfo) -> float:
    """The busiest of a node's CPU and GPU figures (-1 when it has none)."""
    figures = [f for f in (node.cpu_pct, node.gpu_pct) if f is not None]
    return max(figures) if figures else -1.0


#: The orders ``s`` cycles through: each a key of (node, still listed).
SORTS: dict[str, Callable[[NodeInfo, bool], tuple[object, ...]]] = {
    "problems first": row_order,
    "state": lambda n, still: (n.state if still else "~gone", n.name, n.ip),
    "load": lambda n, still: (not still, -_load(n), n.name, n.ip),
    "name": lambda n, still: (n.name, n.ip),
}


def matches(node: NodeInfo, still: bool, text: str) -> bool:
    """Whether ``text`` (any case) is in the node's name, IP, role, state, link or lending."""
    if not text:
        return True
    state = node.state if still else "gone"
    fields = (node.name, node.ip, node.role, state, node.link, node.lending, node.runtime)
    needle = text.casefold()
    return any(needle in f.casefold() for f in fields if f)


def _num(value: float) -> str:
    return f"{value:g}"


def gauge(history: History, thresholds: tuple[float, float], note: str = "") -> Text:
    """``▂▃▅▇ 63%``: the last minute in :data:`SPARK_CELLS` cells and the latest figure."""
    last = history.last()
    if last is None:
        return Text(note or "n/a")
    line = sparkline(downsample(history.values(), SPARK_CELLS), SPARK_CELLS)
    return Text.assemble((line, LEVEL_STYLE[level(last, thresholds)]), f" {last:3.0f}%")


class NodeTable(DataTable[Text]):
    """Rows keyed by Ray node id. :meth:`update_nodes` keeps the cursor on its node."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "screen.node_details", "Node details", show=False),
        Binding("s", "cycle_sort", "Sort nodes", show=False),
        Binding("slash", "start_filter", "Filter nodes", show=False),
    ]

    DEFAULT_CSS = """
    NodeTable { height: auto; max-height: 12; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._known: dict[str, tuple[NodeInfo, bool]] = {}  # id -> (node, still listed)
        self._history: dict[str, tuple[History, History, History]] = {}  # cpu, mem, gpu
        self._shown: list[tuple[str, list[str], bool]] = []  # node id, cells' text, alive
        self.sort_by = next(iter(SORTS))
        self.filter_text = ""
        self.filtering = False  # keys type the filter (see on_key)
        self._cells: LRUCache[Any, SegmentLines] = LRUCache(2000)  # see _render_cell
        self._typed = ""
        self._title: Content | None = None  # the title last set

    def on_mount(self) -> None:
        for label in COLUMNS:
            self.add_column(label, key=label.lower())

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        """DataTable's own cell, kept by what the cell shows rather than by the table's
        update count. DataTable paints every visible cell again after any change (each poll,
        each filter keystroke: some 180 cells at 200x50, a few tenths of a ms each), though
        most cells show what they showed before; here those come from this cache."""
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        try:
            cell = self._data[row_key][column_key]  # type: ignore[index]
        except KeyError:  # the header, a row label: DataTable's own caching
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        shown = (cell.plain, tuple(cell.spans), cell.style) if isinstance(cell, Text) else cell
        key = (row_index, column_index, base_style, width, cursor, hover, shown,
               self._show_hover_cursor, self._pseudo_class_state)  # fmt: skip
        lines = self._cells.get(key)
        if lines is None:
            lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
            self._cells[key] = lines
        return lines

    @property
    def nodes(self) -> list[NodeInfo]:
        return [node for node, _ in self._known.values()]

    def histories(self, node_id: str) -> tuple[History, History, History]:
        if node_id not in self._history:
            self._history[node_id] = tuple(History(HISTORY_S) for _ in range(3))  # type: ignore[assignment]
        return self._history[node_id]

    def lookup(self, node_id: str) -> tuple[NodeInfo, tuple[History, History, History]] | None:
        """A node's latest row and histories (for its details view), None if never seen."""
        known = self._known.get(node_id)
        return (known[0], self.histories(node_id)) if known is not None else None

    def selected_id(self) -> str | None:
        row = self.cursor_row
        return self._shown[row][0] if self.row_count and 0 <= row < len(self._shown) else None

    def update_nodes(self, nodes: list[NodeInfo]) -> None:
        """Show this poll's nodes; ones seen before but not listed now read ``gone``.

        By default problems come first (see :func:`attention`), then the nodes at work, the
        dead last; ``s`` cycles the order (:data:`SORTS`) and :meth:`set_filter` hides rows.
        """
        self._record(nodes)
        self.redraw()

    def action_cycle_sort(self) -> None:
        names = list(SORTS)
        self.sort_by = names[(names.index(self.sort_by) + 1) % len(names)]
        self.redraw()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        # While a filter hides rows the pane keeps its height: shrinking it would move every
        # pane below, and lay out and paint the whole screen for one keystroke.
        if self.filter_text and self.styles.height is not None and self.styles.height.is_auto:
            self.styles.height = self.outer_size.height
        elif not self.filter_text:
            self.styles.height = "auto"
        self.redraw()

    # The filter is typed with the table focused and shows in the pane's title: a box of
    # its own would take the focus (the table then paints every cell again) or lay out the
    # screen as it opens and closes.

    def action_start_filter(self) -> None:
        self.filtering, self._typed = True, self.filter_text
        self._set_title()

    def on_key(self, event: events.Key) -> None:
        """While filtering: a character or Backspace edits the filter, Enter keeps it, Esc
        clears it; other keys (the arrows) do what they always do."""
        if not self.filtering:
            return
        if event.key == "escape":
            self.filtering, self._typed = False, ""
        elif event.key == "enter":
            self.filtering = False
        elif event.key == "backspace":
            self._typed = self._typed[:-1]
        elif event.is_printable and event.character:
            self._typed += event.character
        else:
            return
        event.stop()
        event.prevent_default()
        self.set_filter(self._typed)

    def title(self) -> Content:
        """The pane's title: its key, the order, and the filter with what it leaves; while
        the filter is typed, what was typed (plain text: a '[' is no markup)."""
        shown, total = len(self._shown), len(self._known)
        parts = [f"Nodes (1): {total}"]
        if self.filtering:
            parts[0] = f"Nodes (1): {shown} of {total}"
            parts.append(f"filter: {self._typed}\u258f (Enter keeps, Esc clears)")
        elif self.filter_text:
            parts[0] = f"Nodes (1): {shown} of {total} matching '{self.filter_text}'"
        parts.append(f"sorted: {self.sort_by} (s)")
        return Content(" · ".join(parts))

    def redraw(self) -> None:
        order = SORTS[self.sort_by]
        rows = sorted(self._known.values(), key=lambda item: order(*item))
        rows = [(n, still) for n, still in rows if matches(n, still, self.filter_text)]
        shown = [self._row(node, still) for node, still in rows]
        plain = [(i, [c.plain for c in cells], a) for i, cells, a in shown]
        if plain != self._shown:
            ids = [node_id for node_id, _, _ in shown]
            if ids == [node_id for node_id, _, _ in self._shown] and self.row_count == len(ids):
                self._update_cells(shown)
            else:
                self._rebuild(shown)
            self._shown = plain
        self._set_title()

    def _update_cells(self, shown: list[tuple[str, list[Text], bool]]) -> None:
        """The same rows in the same order (a poll, mostly): only the cells that changed.
        Rebuilding the table instead would lay out and paint the whole screen each poll."""
        keys = [column.lower() for column in COLUMNS]
        for (node_id, cells, _), (_, before, _) in zip(shown, self._shown, strict=True):
            for key, cell, text in zip(keys, cells, before, strict=True):
                if cell.plain != text:
                    self.update_cell(node_id, key, cell, update_width=True)

    def _rebuild(self, shown: list[tuple[str, list[Text], bool]]) -> None:
        """Other rows or another order (a filter, a sort, a node came or went)."""
        keep = self.selected_id()
        self.clear()
        for node_id, row, _alive in shown:
            self.add_row(*row, key=node_id)
        if keep is not None and keep in {node_id for node_id, _, _ in shown}:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def _set_title(self) -> None:
        """The title, set only when it changes (setting it lays out the screen)."""
        title = self.title()
        if title != self._title:
            self._title = self.border_title = title

    def _record(self, nodes: list[NodeInfo]) -> None:
        """Remember this poll's nodes (the others as no longer listed) and their figures."""
        listed = {n.node_id for n in nodes}
        for node_id, (node, _) in list(self._known.items()):
            if node_id not in listed:
                self._known[node_id] = (node, False)
        for n in nodes:
            self._known[n.node_id] = (n, True)
            cpu, mem, gpu = self.histories(n.node_id)
            alive = n.state == "ALIVE"
            cpu.push(n.cpu_pct if alive else None)
            mem.push(n.mem_pct if alive else None)
            gpu.push(n.gpu_pct if alive else None)

    def _row(self, node: NodeInfo, still: bool) -> tuple[str, list[Text], bool]:
        """One node's cells: dimmed when it is dead or gone, its state styled when it waits."""
        state = node.state if still else "gone"
        cpu, mem, gpu = self.histories(node.node_id)
        gpu_note = "none" if not node.gpus else node.gpu_note or "n/a"
        gpu_cell = gauge(gpu, GPU_UTILIZATION_THRESHOLDS, gpu_note)
        if node.gpu_mem_pct is not None:
            gpu_cell.append(f" mem {node.gpu_mem_pct:.0f}%")
        alive = still and node.state == "ALIVE"
        waiting = still and node.state in STATE_STYLE
        style = "" if alive or waiting else "dim"
        cells = [
            Text(c, style=style)
            for c in (
                node.name,
                node.ip,
                node.role,
                state,
                node.link,
                lending_cell(node),
                _num(node.cpus),
            )
        ]
        if waiting:
            cells[3].stylize(STATE_STYLE[node.state])
        if still and node.link == UNREACHABLE:
            cells[4].stylize(UNREACHABLE_STYLE)
        cells += [
            gauge(cpu, CPU_THRESHOLDS),
            gauge(mem, MEMORY_UTILIZATION_THRESHOLDS),
            gpu_cell,
            Text(node.runtime or "n/a", style=style),
        ]
        if not (alive or waiting):
            for cell in cells:
                cell.stylize("dim")
        return node.node_id, cells, alive
