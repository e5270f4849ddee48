"""The cluster screen's jobs tab: the queue's note and table, polled once a second, and what
can be done to a job (queue a new one, cancel, retry, show details).

Self-contained: the screen gives it the agent link, the session and two questions (what the
nodes are called, whether the agent is gone), and its job keys reach it through the screen's
actions, which the job table binds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widgets import Static

from .. import messages
from ..widgets.job_table import JobTable
from .confirm import ConfirmScreen

if TYPE_CHECKING:
    from ..core.jobs import JobView
    from .agent_link import AgentLink
    from .session import Session

JOBS_POLL_S = 1.0
JOBS_POLL_FAILED_S = 3.0
JOBS_POLL_GONE_S = 4.0  # while the agent is gone: twice the status poll's pace then
JOB_KEYS = "n new · c cancel · r retry · Enter details"


class JobsPane(Vertical):
    """``#jobs-note`` over the :class:`JobTable` ``#jobs``; :meth:`poll` starts its polls."""

    def __init__(
        self,
        session: Session,
        link: AgentLink,
        *,
        node_names: Callable[[], dict[str, str]],
        agent_gone: Callable[[], bool],
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.session = session
        self.link = link
        self._node_names = node_names
        self._agent_gone = agent_gone

    def compose(self) -> ComposeResult:
        yield Static("job queue: reading…", id="jobs-note", markup=False)
        yield JobTable(id="jobs")

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs")
    def poll(self) -> None:
        """Read the queue once; the next poll is scheduled when this one is shown."""
        from ..core import texts
        from ..core.errors import LanrayError
        from ..core.protocol import JobsRequest

        try:
            got = self.link.request(JobsRequest(), timeout=8.0)
        except LanrayError as exc:
            self.post_message(messages.JobsPolled(None, [], messages.describe(exc)))
            return
        self.post_message(messages.JobsPolled(got.jobs, texts.job_notes(got)))

    def on_jobs_polled(self, message: messages.JobsPolled) -> None:
        message.stop()
        try:
            note, table = self.query_one("#jobs-note", Static), self.query_one(JobTable)
        except NoMatches:
            return  # the screen is going away, and its parts went first: no more polls
        if message.jobs is None:
            note.update(f"job queue: not available ({message.error})")
        else:
            table.update_jobs(message.jobs, self._node_names())
            counts: dict[str, int] = {}
            for job in message.jobs:
                counts[job.state] = counts.get(job.state, 0) + 1
            summary = ", ".join(f"{v} {k.lower()}" for k, v in counts.items()) or "no jobs yet"
            note.update("; ".join([f"jobs: {summary}", *message.notes]) + f"   ({JOB_KEYS})")
        delay = JOBS_POLL_S if message.jobs is not None else JOBS_POLL_FAILED_S
        if self.is_attached and not self._agent_gone():
            self.set_timer(delay, self.poll)
        elif self.is_attached:
            self.set_timer(JOBS_POLL_GONE_S, self.poll)

    def new_job(self) -> None:
        """Open the new-job form; a queued job is announced and the queue read again."""
        from .new_job import NewJobScreen

        self.app.push_screen(NewJobScreen(self.session, self.link), self._job_queued)

    def _job_queued(self, job_id: str | None) -> None:
        if job_id:
            self.notify(f"queued {job_id}", title="new job")
            self.poll()

    def _selected_job(self, verb: str) -> JobView | None:
        job = self.query_one(JobTable).selected()
        if job is None:
            self.notify(f"no job to {verb}: select one in the jobs pane (4)", severity="warning")
        return job

    def cancel_selected(self) -> None:
        """Ask, then cancel the selected job."""
        job = self._selected_job("cancel")
        if job is None:
            return
        question = f"Cancel job {job.id} ({job.name}, {job.state})?"

        def answered(yes: bool | None) -> None:
            if yes:
                self._job_op("cancel", job.id)

        self.app.push_screen(ConfirmScreen(question, yes="Cancel job", no="Keep it"), answered)

    def retry_selected(self) -> None:
        job = self._selected_job("retry")
        if job is not None:
            self._job_op("retry", job.id)

    def show_selected(self) -> None:
        from .job_details import JobDetailsScreen

        job = self._selected_job("show")
        if job is not None:
            self.app.push_screen(JobDetailsScreen(self.session, job))

    @work(thread=True, exclusive=False, exit_on_error=False, group="job-op")
    def _job_op(self, op: str, job_id: str) -> None:
        from .job_details import job_op

        text, ok = job_op(self.link, op, job_id)
        self.post_message(messages.NodeActionDone(text, ok))
