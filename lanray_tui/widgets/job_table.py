"""The cluster's job queue, one row per job: state, node, elapsed time, who queued it.

The rows come from the host's queue (through this node's agent); the keys act on the job
under the cursor through the screen: ``n`` new job, ``c`` cancel, ``r`` retry, Enter details.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

COLUMNS = ("ID", "Name", "State", "Node", "Elapsed", "Submitter", "Message")
STATE_STYLE = {
    "QUEUED": "",
    "SUBMITTED": "bold",
    "RUNNING": "bold",
    "SUCCEEDED": "",
    "FAILED": "bold",
    "CANCELLED": "dim",
    "LOST": "bold",
}


def elapsed(job: Mapping[str, Any], now: float) -> str:
    """How long it has run (or ran); for a job still waiting, how long it has waited."""
    start, end = job.get("started"), job.get("ended")
    if start:
        return _span((end or now) - start)
    if job.get("state") == "QUEUED" and job.get("created") is not None:
        return "waiting " + _span(now - job["created"])
    return "-"


def _span(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def job_row(job: Mapping[str, Any], node_names: Mapping[str, str], now: float) -> tuple[str, ...]:
    node_ip = str(job.get("node") or "")
    node = node_names.get(node_ip, node_ip) if node_ip else "-"
    return (
        str(job["id"]),
        str(job.get("name", "")),
        str(job.get("state", "")),
        node,
        elapsed(job, now),
        str(job.get("submitter", "")),
        str(job.get("message") or "")[:60],
    )


class JobTable(DataTable[Text]):
    """Rows keyed by job id, newest last; :meth:`update_jobs` keeps the cursor on its job."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "screen.new_job", "New job"),
        Binding("c", "screen.cancel_job", "Cancel job"),
        Binding("r", "screen.retry_job", "Retry job"),
        Binding("enter", "screen.job_details", "Details"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.jobs: dict[str, dict[str, Any]] = {}
        self._shown: list[tuple[str, tuple[str, ...]]] = []

    def on_mount(self) -> None:
        for label in COLUMNS:
            self.add_column(label, key=label.lower())

    def update_jobs(
        self,
        jobs: Sequence[Mapping[str, Any]],
        node_names: Mapping[str, str],
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        self.jobs = {str(j["id"]): dict(j) for j in jobs}
        shown = [(str(j["id"]), job_row(j, node_names, now)) for j in jobs]
        if shown == self._shown:
            return
        keep = self.selected_id()
        self._shown = shown
        self.clear()
        for job_id, cells in shown:
            style = STATE_STYLE.get(cells[2], "")
            self.add_row(*(Text(c, style=style) for c in cells), key=job_id)
        if keep is not None and keep in self.jobs:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def selected_id(self) -> str | None:
        if not self.row_count or not 0 <= self.cursor_row < self.row_count:
            return None
        return str(self.ordered_rows[self.cursor_row].key.value)

    def selected(self) -> dict[str, Any] | None:
        job_id = self.selected_id()
        return self.jobs.get(job_id) if job_id is not None else None
