"""One job: what it is and where it stands, its live log, and the metrics it reports.

The log streams through the agent (Ray's log tail on the host) into a :class:`LogPane`; the
same worker reads the job's ``lanray-metric`` lines (see :mod:`lanray_tui.core.metrics`)
and the screen draws one sparkline per series. The job's state is polled once a second.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from ..core.sparkline import sparkline
from ..widgets.job_table import elapsed
from ..widgets.log_pane import LogPane
from .session import Session

if TYPE_CHECKING:
    from ..core.control import ControlClient
    from ..core.jobs import JobView

POLL_S = 1.0
RAY_METRICS_EVERY = 5  # polls between two reads of Ray's result files
MAX_RAY_LINES = 12
RESULTS_DIR = "lanray_results"  # under the home folder: where 's' saves a job's results
SPARK_WIDTH = 40
NO_METRICS = (
    "metrics: none yet (a job reports them with Ray Train or Tune, or by printing "
    '\'lanray-metric {"epoch": 1, "loss": 0.5}\' lines)'
)
BEST = "★ "


def ray_series(
    trials: dict[str, dict[str, list[float]]], best: dict[str, str] | None
) -> dict[str, list[float]]:
    """Ray Train/Tune series to plot: with a best trial, one line per trial of the metric
    that picks it (the best first, marked); without, every series, up to a screenful."""
    out: dict[str, list[float]] = {}
    if best:
        metric, winner = best["metric"], best["trial"]
        order = sorted(trials, key=lambda t: t != winner)
        for trial in order:
            points = trials[trial].get(metric)
            if points:
                mark = BEST if trial == winner else ""
                out[f"{mark}{trial[:40]} {metric}"] = points
    else:
        for trial, series in trials.items():
            for metric, points in series.items():
                out[f"{trial[:40]} {metric}"] = points
    return dict(list(out.items())[:MAX_RAY_LINES])


class JobPolled(Message):
    def __init__(self, job: JobView | None, error: str = "") -> None:
        super().__init__()
        self.job = job
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobPolled)


class MetricsRead(Message):
    def __init__(self, series: dict[str, list[float]], from_ray: bool = False) -> None:
        super().__init__()
        self.series = series
        self.from_ray = from_ray  # Ray's result files (else the job's lanray-metric lines)

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MetricsRead) and message.from_ray == self.from_ray


class JobLogEnded(Message):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def summary_text(job: JobView, now: float) -> Text:
    out = Text()
    out.append(f"{job.name} ", "bold")
    out.append(f"{job.id}  ")
    out.append(job.state, "bold reverse")
    out.append(f"  attempt {job.attempt}  elapsed {elapsed(job, now)}\n")
    out.append(f"runs: {job.entrypoint}\n")
    bits = [f"queued by {job.submitter or '?'}"]
    if job.node:
        bits.append(f"driver on {job.node}")
    if job.num_cpus is not None:
        bits.append(f"CPUs {job.num_cpus:g}")
    if job.num_gpus:
        bits.append(f"GPUs {job.num_gpus:g}")
    if job.exit_code is not None:
        bits.append(f"exit code {job.exit_code}")
    out.append("; ".join(bits))
    if job.message:
        out.append(f"\n{job.message}", "bold")
    return out


def metrics_text(series: dict[str, list[float]]) -> Text:
    if not series:
        return Text(NO_METRICS)
    out = Text()
    width = max(len(name) for name in series)
    for i, (name, points) in enumerate(series.items()):
        lo, hi = min(points), max(points)
        line = sparkline(points, SPARK_WIDTH, lo, hi if hi > lo else lo + 1)
        out.append(f"{name.ljust(width)} ")
        out.append(line, "bold")
        out.append(f" {points[-1]:.4g} (min {lo:.4g}, max {hi:.4g}, {len(points)} points)")
        if i < len(series) - 1:
            out.append("\n")
    return out


class JobDetailsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("r", "retry_job", "Retry job"),
        Binding("s", "save_results", "Save results"),
    ]

    def __init__(self, session: Session, job: JobView) -> None:
        from .agent_link import AgentLink

        super().__init__()
        self.session = session
        self.link = AgentLink(session.paths.socket, timeout=10.0)
        self.job = job
        self.series: dict[str, list[float]] = {}
        self.ray_series: dict[str, list[float]] = {}
        self._polls = 0
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static(summary_text(self.job, time.time()), id="job-summary")
        yield Static(metrics_text({}), id="job-metrics")
        save_dir = self.session.paths.state_dir / "saved-logs"
        yield LogPane(f"job-{self.job.id}", save_dir=save_dir, id="job-log")
        yield Footer()

    def on_mount(self) -> None:
        self.feed = self.query_one(LogPane).feed  # the thread-safe hand-off, read on the UI thread
        self._poll()
        self._stream()
        self.query_one(LogPane).view.focus()

    # ----- workers --------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-poll")
    def _poll(self) -> None:
        from .. import messages
        from ..core.errors import LanrayError
        from ..core.protocol import JobRequest, MetricsRequest

        try:
            job = self.link.request(JobRequest(id=self.job.id), timeout=10.0)
        except LanrayError as exc:
            self.post_message(JobPolled(None, messages.describe(exc)))
            return
        self.post_message(JobPolled(job))
        self._polls += 1
        if self._polls % RAY_METRICS_EVERY == 1:
            try:
                got = self.link.request(MetricsRequest(id=self.job.id), timeout=10.0)
            except LanrayError:
                return  # an older host, or a read that failed: the log's metrics still show
            self.post_message(MetricsRead(ray_series(got.trials, got.best), from_ray=True))

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-log")
    def _stream(self) -> None:
        from ..core import metrics
        from ..core.protocol import JobLogsRequest
        from .agent_link import pump_lines

        worker = get_current_worker()
        reader = metrics.Reader()

        def on_line(line: str) -> None:
            if reader.feed(line):
                self.post_message(MetricsRead(reader.snapshot()))

        items = self.link.stream(JobLogsRequest(id=self.job.id, follow=True))
        reason = pump_lines(items, self.feed, worker, on_line, "the job has ended")
        if reason is not None:
            self.post_message(JobLogEnded(reason))

    # ----- handlers -------------------------------------------------------------------------

    def on_job_polled(self, message: JobPolled) -> None:
        if message.job is not None:
            self.job = message.job
            self.query_one("#job-summary", Static).update(summary_text(self.job, time.time()))
        elif message.error:
            self.query_one("#job-summary", Static).update(
                Text(f"{self.job.id}: {message.error}", "bold")
            )
        if self.is_attached:
            self._timer = self.set_timer(POLL_S, self._poll)

    def on_metrics_read(self, message: MetricsRead) -> None:
        if message.from_ray:
            self.ray_series = message.series
        else:
            self.series = message.series
        shown = {**self.ray_series, **self.series}
        self.query_one("#job-metrics", Static).update(metrics_text(shown))

    def on_job_log_ended(self, message: JobLogEnded) -> None:
        pane = self.query_one(LogPane)
        pane.note = f"log: {message.reason}"
        pane.update_status()

    def on_unmount(self) -> None:
        self.link.close()  # wakes the blocked log read: the worker ends

    def action_back(self) -> None:
        self.dismiss(None)

    def action_cancel_job(self) -> None:
        self._job_op("cancel", self.job.id)

    def action_retry_job(self) -> None:
        self._job_op("retry", self.job.id)

    def action_save_results(self) -> None:
        self.notify(f"saving the results of {self.job.id}…")
        self._save_results(self.job.id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-save")
    def _save_results(self, job_id: str) -> None:
        text, ok = save_results(self.session, job_id)
        self.app.call_from_thread(self.notify, text, severity="information" if ok else "error")

    @work(thread=True, exclusive=False, exit_on_error=False, group="job-op")
    def _job_op(self, op: str, job_id: str) -> None:
        text, ok = job_op(self.link, op, job_id)
        self.app.call_from_thread(self.notify, text, severity="information" if ok else "error")
        if ok and op == "retry":
            self.app.call_from_thread(self._stream)  # the new attempt's log


def save_results(session: Session, job_id: str) -> tuple[str, bool]:
    """The job's output folder from the cluster storage into ~/lanray_results/JOB (what
    ``lanray-tui results JOB --to ~/lanray_results`` does): (what happened, whether it did)."""
    from pathlib import Path

    from ..core.errors import LanrayError
    from ..storage_fs import save_results as fetch

    dest = Path.home() / RESULTS_DIR / job_id
    try:
        files, size = fetch(session.cfg, job_id, dest)
    except LanrayError as exc:
        return str(exc), False
    return f"{job_id}: {files} file(s), {size / 1e6:.1f} MB saved in {dest}", True


def job_op(link: ControlClient, op: str, job_id: str) -> tuple[str, bool]:
    """Cancel or retry a job through ``link``: (what happened, in one line; whether it did)."""
    from .. import messages
    from ..core import texts
    from ..core.errors import LanrayError
    from ..core.protocol import CancelRequest, RetryRequest

    try:
        if op == "retry":
            return texts.retried(link.request(RetryRequest.of(id=job_id), timeout=30.0)), True
        got = link.request(CancelRequest.of(id=job_id), timeout=30.0)
    except LanrayError as exc:
        return f"{op} {job_id}: {messages.describe(exc)}", False
    return texts.cancelled(got), got.changed
