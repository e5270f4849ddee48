"""Hosts found on the LAN, live: one row per cluster head, newest answer wins."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import DataTable

if TYPE_CHECKING:
    from ..core.discovery import FoundHost

COLUMNS = ("Cluster", "Address", "Host", "Nodes", "Free CPU/GPU", "Compatible", "Beacon")
STALE_AFTER_S = 5.0

VERIFIED_WORDS = {
    "verified": "verified",
    "forged": "FORGED",
    "stale": "stale",
    "unverified": "unsigned",
}


def host_key(host: FoundHost) -> str:
    """Cluster, head and sender: a forged beacon in a host's name gets a row of its own."""
    return "@".join(host.key)


def describe_host(host: FoundHost, now: float | None = None) -> str:
    """A few lines about one host, for the line under the list."""
    age = (now if now is not None else time.time()) - host.last_seen
    lines = [
        f"{host.cluster_name} at {host.address} (host {host.host_name}, via {host.interface}); "
        f"Ray {host.ray_version}, Python {host.python_version}, runtime {host.runtime}; "
        f"last heard {age:.0f} s ago",
    ]
    if not host.compatible:
        lines.append(f"cannot join: {host.why_not}")
    if host.verified == "forged":
        lines.append("its beacon fails the signature of a cluster this node knows: not joining")
    elif host.verified == "unverified":
        lines.append("unsigned for this node (normal before pairing); the join code checks it")
    return "\n".join(lines)


class HostList(DataTable[Text]):
    """Rows keyed by cluster id and address; hosts not heard for a while are dimmed."""

    DEFAULT_CSS = """
    HostList { height: auto; max-height: 10; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self.hosts: dict[str, FoundHost] = {}
        self._shown: list[tuple[str, Sequence[str], bool]] = []

    def on_mount(self) -> None:
        for label in COLUMNS:
            self.add_column(label, key=label.lower())

    def add_host(self, host: FoundHost) -> None:
        self.hosts[host_key(host)] = host
        self.redraw()

    def highlighted(self) -> FoundHost | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.hosts.get(str(key))

    def redraw(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        rows: list[tuple[str, Sequence[str], bool]] = []
        for key, h in sorted(self.hosts.items(), key=lambda kv: (kv[1].cluster_name, kv[0])):
            fresh = now - h.last_seen < STALE_AFTER_S
            cells = (
                h.cluster_name,
                h.address,
                h.host_name,
                str(h.node_count),
                f"{h.free_cpus:g} / {h.free_gpus:g}",
                "yes" if h.compatible else "no (see below)",
                VERIFIED_WORDS.get(h.verified, h.verified)
                + ("" if fresh else f", {now - h.last_seen:.0f}s ago"),
            )
            rows.append((key, cells, fresh and h.compatible and h.verified != "forged"))
        if rows == self._shown:
            return
        self._shown = rows
        keep = self.highlighted()
        self.clear()
        for key, row, ok in rows:
            style = "" if ok else "dim"
            texts = [Text(c, style=style) for c in row]
            if row[-1].startswith("FORGED"):
                texts[-1] = Text(row[-1], style="bold reverse")
            self.add_row(*texts, key=key)
        if keep is not None and host_key(keep) in self.hosts:
            self.move_cursor(row=self.get_row_index(host_key(keep)), animate=False)
