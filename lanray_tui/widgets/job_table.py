"""The cluster's job queue, one row per job: state, node, elapsed time, who queued it.

The rows come from the host's queue (through this node's agent); the keys act on the job
under the cursor through the screen: ``n`` new job, ``c`` cancel, ``r`` retry, Enter details.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

if TYPE_CHECKING:
    from ..core.jobs import JobView

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


def elapsed(job: JobView, now: float) -> str:
    """How long it has run (or ran); for a job still waiting, how long it has waited."""
    run = job.run_time(now)
    if run is not None:
        return _span(run)
    if job.state == "QUEUED" and job.created is not None:
        return "waiting " + _span(now - job.created)
    return "-"


def _span(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def job_row(job: JobView, node_names: Mapping[str, str], now: float) -> tuple[str, ...]:
    node = node_names.get(job.node, job.node) if job.node else "-"
    return (job.id, job.name, job.state, node, elapsed(job, now), job.submitter, job.message[:60])


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
        self.jobs: dict[str, JobView] = {}
        self._shown: list[tuple[str, tuple[str, ...]]] = []

    def on_mount(self) -> None:
        for label in COLUMNS:
            self.add_column(label, key=label.lower())

    def update_jobs(
        self,
        jobs: Sequence[JobView],
        node_names: Mapping[str, str],
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        self.jobs = {j.id: j for j in jobs}
        shown = [(j.id, job_row(j, node_names, now)) for j in jobs]
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

    def selected(self) -> JobView | None:
        job_id = self.selected_id()
        return self.jobs.get(job_id) if job_id is not None else None
