"""One node up close: bars and minute-long sparklines for CPU, memory and each GPU, with
temperatures, power, battery, who uses the GPU (Ray or the owner) and why it lends or not.

It reads what the nodes pane already has (the last poll and its histories) once a second:
no call of its own. Readings the node cannot give say "n/a" and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

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
    from ..core.resources import Reading

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


def _reading(value: Reading, unit: str) -> str:
    if value.value is not None:
        return f"{value.value:.0f} {unit}"
    return f"n/a ({value.reason})" if value.reason else "n/a"


def _mib(value: float | None) -> str:
    return f"{value:.0f} MiB" if value is not None else "n/a"


def _gib(used: float | None, total: float | None) -> str:
    return f"{used / GIB:.1f} of {total / GIB:.1f} GiB" if used is not None and total else ""


def details_text(node: NodeInfo, hist: tuple[History, History, History]) -> Text:
    res = node.sample
    cpu_h, mem_h, gpu_h = hist
    out = Text()
    out.append(f"{node.name}", "bold")
    out.append(f"  {node.ip}  {node.role}  {node.state}  link {node.link}  runtime ")
    out.append(f"{node.runtime or 'n/a'}\n")
    out.append(f"lending: {node.lending or 'n/a'}")
    if node.lending_reason:
        out.append(f" ({node.lending_reason})")
    out.append(f"\nmemory: agent {_mib(node.agent_mb)}, Ray {_mib(node.ray_mb)}")
    if node.ray_restarts:
        out.append(
            f"; Ray restarted {node.ray_restarts} time{'s' if node.ray_restarts > 1 else ''}"
        )
    if node.guard_warning:
        out.append("\n")
        out.append(f"! {node.guard_warning}", "bold")
    out.append("\n\n")
    if res is None:
        out.append("no readings from this node yet (its agent reports once a second)")
        return out
    split = f"Ray {res.ray_cpu_percent:.0f}%, owner {res.owner_cpu_percent:.0f}%"
    out.append_text(_meter("CPU", node.cpu_pct, CPU_THRESHOLDS, split))
    out.append(f"\n{'':8}{sparkline(cpu_h.values(), 60)}  last 60 s\n")
    mem_tail = _gib(res.memory_used, res.memory_total)
    out.append_text(_meter("Memory", node.mem_pct, MEMORY_UTILIZATION_THRESHOLDS, mem_tail))
    out.append(f"\n{'':8}{sparkline(mem_h.values(), 60)}  last 60 s\n")
    if not res.gpus:
        out.append(f"GPU     none: {res.gpus_reason or 'no NVIDIA GPU seen'}\n")
    for g in res.gpus:
        pct = g.utilization.value
        out.append(f"\nGPU {g.index}   {g.name}\n")
        tail = "" if pct is not None else g.utilization.reason
        out.append_text(_meter("  util", pct, GPU_UTILIZATION_THRESHOLDS, tail))
        mu, mt = g.memory_used.value, g.memory_total.value
        if mu is not None and mt:
            out.append("\n").append_text(
                _meter("  memory", 100.0 * mu / mt, MEMORY_UTILIZATION_THRESHOLDS, _gib(mu, mt))
            )
        temp, power = _reading(g.temperature_c, "°C"), _reading(g.power_w, "W")
        out.append(f"\n  {temp}, {power}\n")
        for p in g.processes:
            who = "Ray" if p.ray else "owner"
            size = f"{p.memory / GIB:.1f} GiB" if p.memory is not None else "n/a"
            out.append(f"  {p.pid} {p.name} ({who}, {p.kind}, {size})\n")
        if not g.processes:
            out.append(f"  processes: {g.processes_reason or 'none'}\n")
    if len(res.gpus) > 1:
        out.append(f"{'GPUs':8}{sparkline(gpu_h.values(), 60)}  mean, last 60 s\n")
    elif res.gpus:
        out.append(f"{'':8}{sparkline(gpu_h.values(), 60)}  last 60 s\n")
    plugged = res.plugged
    power_src = "on AC" if plugged else "on battery" if plugged is False else "power: n/a"
    out.append(f"\nbattery {_reading(res.battery_percent, '%')}, {power_src}; ")
    out.append(f"CPU temperature {_reading(res.cpu_temperature_c, '°C')}; ")
    out.append(f"load {res.load_1m:.2f}")
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
