"""The job queue pane. The queue is not in the core yet: this says so and fakes nothing."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Static

NOT_AVAILABLE = "job queue: not available yet"


class JobTable(Static, can_focus=True):
    """Placeholder with the keys the queue will have; each says it is not available yet."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_job", "New job"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("enter", "details", "Details"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            f"{NOT_AVAILABLE}\n\n"
            "Submitting, queueing and cancelling Ray jobs from here will come with the "
            "job queue; until then use 'ray job submit' against the dashboard.",
            id=id,
            markup=False,
        )

    def action_new_job(self) -> None:
        self.notify(NOT_AVAILABLE, title="new job")

    def action_cancel_job(self) -> None:
        self.notify(NOT_AVAILABLE, title="cancel job")

    def action_details(self) -> None:
        self.notify(NOT_AVAILABLE, title="job details")
