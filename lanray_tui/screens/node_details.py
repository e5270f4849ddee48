"""One node up close: bars and minute-long sparklines for CPU, memory and each GPU, with
temperatures, power, battery, who uses the GPU (Ray or the owner) and why it lends or not.

It reads what the nodes pane already has (the last poll and its histories) once a second:
no call of its own. Readings the node cannot give say "n/a" and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..core.sparkline import (
    CPU_THRESHOLDS,
    GPU_UTILIZATION_THRESHOLDS,
    MEMORY_UTILIZATION_THRESHOLDS,
    History,
    bar,
    level,
    sparkline,
)
from ..widgets.node_table import LEVEL_STYLE

if TYPE_CHECKING:
    from ..core.models import NodeInfo

    Lookup = Callable[[], tuple[NodeInfo, tuple[History, History, History]] | None]

BAR_CELLS = 24
GIB = 1024**3


def _meter(label: str, pct: float | None, thresholds: tuple[float, float], tail: str = "") -> Text:
    out = Text(f"{label:<8}")
    if pct is None:
        return out.append(f"n/a{f': {tail}' if tail else ''}")
    out.append(bar(pct, BAR_CELLS), LEVEL_STYLE[level(pct, thresholds)])
    out.append(f" {pct:5.1f}%")
    if tail:
        out.append(f"  {tail}")
    return out


def _reading(value: Any, unit: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.0f} {unit}"
    return f"n/a ({value})" if value else "n/a"


def details_text(node: NodeInfo, hist: tuple[History, History, History]) -> Text:
    res = node.resources
    cpu_h, mem_h, gpu_h = hist
    out = Text()
    out.append(f"{node.name}", "bold")
    out.append(f"  {node.ip}  {node.role}  {node.state}  link {node.link}  runtime ")
    out.append(f"{node.runtime or 'n/a'}\n")
    out.append(f"lending: {node.lending or 'n/a'}")
    if node.lending_reason:
        out.append(f" ({node.lending_reason})")
    out.append("\n\n")
    if not res:
        out.append("no readings from this node yet (its agent reports once a second)")
        return out
    owner, ray = res.get("owner_cpu_pct"), res.get("ray_cpu_pct")
    split = (
        f"Ray {ray:.0f}%, owner {owner:.0f}%"
        if isinstance(owner, (int, float)) and isinstance(ray, (int, float))
        else ""
    )
    out.append_text(_meter("CPU", node.cpu_pct, CPU_THRESHOLDS, split))
    out.append(f"\n{'':8}{sparkline(cpu_h.values(), 60)}  last 60 s\n")
    used, total = res.get("mem_used"), res.get("mem_total")
    mem_tail = (
        f"{used / GIB:.1f} of {total / GIB:.1f} GiB"
        if isinstance(used, (int, float)) and isinstance(total, (int, float))
        else ""
    )
    out.append_text(_meter("Memory", node.mem_pct, MEMORY_UTILIZATION_THRESHOLDS, mem_tail))
    out.append(f"\n{'':8}{sparkline(mem_h.values(), 60)}  last 60 s\n")
    gpus = [g for g in res.get("gpus") or [] if isinstance(g, dict)]
    if not gpus:
        out.append(f"GPU     none: {res.get('gpus_reason') or 'no NVIDIA GPU seen'}\n")
    for g in gpus:
        util = g.get("util")
        pct = float(util) if isinstance(util, (int, float)) else None
        out.append(f"\nGPU {g.get('index', '?')}   {g.get('name', '')}\n")
        out.append_text(_meter("  util", pct, GPU_UTILIZATION_THRESHOLDS, "" if pct else str(util)))
        mu, mt = g.get("mem_used"), g.get("mem_total")
        if isinstance(mu, (int, float)) and isinstance(mt, (int, float)) and mt:
            tail = f"{mu / GIB:.1f} of {mt / GIB:.1f} GiB"
            out.append("\n").append_text(
                _meter("  memory", 100.0 * mu / mt, MEMORY_UTILIZATION_THRESHOLDS, tail)
            )
        temp, power = _reading(g.get("temp_c"), "°C"), _reading(g.get("power_w"), "W")
        out.append(f"\n  {temp}, {power}\n")
        procs = [p for p in g.get("procs") or [] if isinstance(p, dict)]
        for p in procs:
            who = "Ray" if p.get("ray") else "owner"
            mem = p.get("mem")
            size = f"{mem / GIB:.1f} GiB" if isinstance(mem, (int, float)) else "n/a"
            out.append(f"  {p.get('pid')} {p.get('name', '')} ({who}, {p.get('kind')}, {size})\n")
        if not procs:
            out.append(f"  processes: {g.get('procs_reason') or 'none'}\n")
    if len(gpus) > 1:
        out.append(f"{'GPUs':8}{sparkline(gpu_h.values(), 60)}  mean, last 60 s\n")
    elif gpus:
        out.append(f"{'':8}{sparkline(gpu_h.values(), 60)}  last 60 s\n")
    battery, plugged = res.get("battery_pct"), res.get("plugged")
    power_src = "on AC" if plugged else "on battery" if plugged is False else "power: n/a"
    out.append(f"\nbattery {_reading(battery, '%')}, {power_src}; ")
    out.append(f"CPU temperature {_reading(res.get('cpu_temp_c'), '°C')}; ")
    load = res.get("load_1m")
    out.append(f"load {load:.2f}" if isinstance(load, (int, float)) else "load n/a")
    return out


class NodeDetailsScreen(ModalScreen[None]):
    """``lookup`` gives the node's latest row and histories (None once it is gone)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Back"),
        Binding("enter", "dismiss", "Back", show=False),
    ]

    def __init__(self, lookup: Lookup) -> None:
        super().__init__()
        self.lookup = lookup

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="node-box", classes="dialog"):
            yield Static("", id="node-details")

    def on_mount(self) -> None:
        self.refresh_details()
        self.set_interval(1.0, self.refresh_details)

    def refresh_details(self) -> None:
        got = self.lookup()
        shown = self.query_one("#node-details", Static)
        if got is None:
            shown.update("this node is no longer listed")
            return
        shown.update(details_text(*got))
