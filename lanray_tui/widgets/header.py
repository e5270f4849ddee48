"""The cluster header: name, head, this node, node count, totals and the join code."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

if TYPE_CHECKING:
    from ..core.models import AgentInfo, NodeInfo

FREE_NOT_AVAILABLE = "free: not available yet"
CODE_NOT_AVAILABLE = "join code: not available yet"


def _plural(n: float, word: str) -> str:
    return f"{n:g} {word}" + ("" if n == 1 else "s")


class ClusterHeader(Static):
    """Three short lines that fit 80 columns; problems replace the last line."""

    DEFAULT_CSS = """
    ClusterHeader { height: auto; padding: 0 1; }
    """

    def __init__(self, agent: AgentInfo, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.agent = agent
        self.nodes: list[NodeInfo] | None = None
        self.failures = ""  # failed pairing attempts and their sources (host)
        self.free: dict[str, float] | None = None
        self.code = ""
        self.code_note = "join code: asking the agent…" if agent.role == "host" else ""
        self.problem = ""
        self._shows: tuple[str, tuple[object, ...]] | None = None  # what the last update showed

    def on_mount(self) -> None:
        self._redraw()

    def set_agent(self, agent: AgentInfo) -> None:
        self.agent = agent
        self._redraw()

    def set_nodes(self, nodes: list[NodeInfo], free: dict[str, float] | None = None) -> None:
        self.nodes = nodes
        self.free = free
        self._redraw()

    def set_code(self, code: str, expires_in: float, error: str = "", failures: str = "") -> None:
        self.failures = failures
        if code:
            self.code = code
            mins = max(0, int(expires_in)) // 60
            left = f"{mins} min" if mins else "under a minute"
            self.code_note = f"· {left} left · type it on the machine that joins"
        else:
            self.code = ""
            self.code_note = error or CODE_NOT_AVAILABLE
        self._redraw()

    def set_problem(self, problem: str) -> None:
        self.problem = problem
        self._redraw()

    def text(self) -> Text:
        a = self.agent
        out = Text(no_wrap=False, overflow="fold")
        out.append("cluster ", "dim")
        out.append(a.cluster_name or "?", "bold")
        out.append("  head ", "dim")
        out.append(a.head_address or "?")
        role = "host" if a.role == "host" else "worker"
        out.append("  this node ", "dim")
        out.append(f"{role} {a.node_ip}".strip())
        state_style = "bold" if a.state == "ready" else "bold reverse"
        out.append(" ")
        out.append(a.state, state_style)
        if a.detail:
            out.append(f" ({a.detail})")
        out.append("\n")
        if self.nodes is None:
            out.append("nodes: asking the agent…", "dim")
        else:
            alive = [n for n in self.nodes if n.state == "ALIVE"]
            out.append(_plural(len(alive), "node"), "bold")
            others = Counter(n.state.lower() for n in self.nodes if n.state != "ALIVE")
            if others:
                out.append(" (+" + ", ".join(f"{k} {s}" for s, k in sorted(others.items())) + ")")
            cpus = sum(n.cpus for n in alive)
            gpus = sum(n.gpus for n in alive)
            mem = sum(n.memory_gb for n in alive)
            out.append(f" · {_plural(cpus, 'CPU')} · {_plural(gpus, 'GPU')} · {mem:.1f} GiB")
            f = self.free
            if f:
                out.append(" · free ", "dim")
                out.append(
                    f"{f.get('free_cpus', 0):g} CPU · {f.get('free_gpus', 0):g} GPU · "
                    f"{f.get('free_memory_gb', 0):.1f} GiB"
                )
            else:
                out.append(f" · {FREE_NOT_AVAILABLE}", "dim")
        if self.problem:
            out.append("\n")
            out.append("! ", "bold")
            out.append(self.problem, "bold")
        elif a.role == "host":
            out.append("\n")
            if self.code:
                out.append("join code ", "dim")
                out.append(self.code, "bold reverse")
                out.append(f" {self.code_note}", "dim")
            else:
                out.append(self.code_note, "dim")
            if self.failures:
                out.append("  ! ", "bold")
                out.append(self.failures, "bold")
        return out

    def _redraw(self) -> None:
        # Each poll sets the agent and the nodes again, mostly to what they were: an update
        # lays out the whole screen (the header's height may change), so only a change does.
        text = self.text()
        shows = (text.plain, tuple(text.spans))
        if shows != self._shows:
            self._shows = shows
            self.update(text)
