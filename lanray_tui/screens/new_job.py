"""Queue a job: pick a sample job or any script (a file picker), or type a command.

Submitting does what ``lanray-tui submit`` does (build the spec, upload the working dir
from this node, hand it to the agent, which forwards it to the host's queue) in a thread
worker. The screen dismisses with the queued job's id.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..widgets.steps import StepList
from .session import Session

if TYPE_CHECKING:
    from ..core.jobs import JobView

PICK_FILE = "pick-file"
OPTION_WIDTH = 62  # a sample job's row fits an 80-column terminal, on one line


def _one_row(text: str) -> str:
    return text if len(text) <= OPTION_WIDTH else text[: OPTION_WIDTH - 1] + "…"


class JobQueued(Message):
    """The job went into the queue (``job``), or why not (``error``, one line)."""

    def __init__(self, job: JobView | None, error: str = "") -> None:
        super().__init__()
        self.job = job
        self.error = error


class _Form(VerticalScroll, can_focus=False):
    """Scrolls on a small terminal; Tab goes from field to field, never to the form."""


class NewJobScreen(ModalScreen[str | None]):
    """Dismisses with the new job's id, or None when the user backs out."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "submit", "Queue the job"),
    ]

    def __init__(self, session: Session, link: Any) -> None:
        super().__init__()
        self.session = session
        self.link = link
        self.busy = False

    def compose(self) -> ComposeResult:
        from ..core.submit import sample_jobs

        samples = sample_jobs()
        with _Form(id="new-job", classes="dialog"):
            yield Static("New job", classes="screen-title")
            options = [
                Option(_one_row(f"{Path(p).name}  {summary}"), id=p) for p, summary in samples
            ]
            options.append(Option("Another script… (file picker)", id=PICK_FILE))
            yield OptionList(*options, id="job-choices")
            if not samples:
                yield Static("sample jobs: not available in this install", classes="hint")
            yield DirectoryTree(Path.cwd(), id="job-files", classes="-hidden")
            with Vertical(classes="field"):
                yield Label("Script (run with the cluster's Python, its folder uploaded)")
                yield Input(id="job-script", placeholder="path/to/script.py")
            with Vertical(classes="field"):
                yield Label("…or a command (when no script is given)")
                yield Input(id="job-command", placeholder="python -c 'print(1)'")
            with Horizontal(id="job-row"):
                with Vertical(classes="field"):
                    yield Label("Arguments")
                    yield Input(id="job-args", placeholder="--epochs 3")
                with Vertical(classes="field"):
                    yield Label("CPUs")
                    yield Input(id="job-cpus", placeholder="Ray's default", type="number")
                with Vertical(classes="field"):
                    yield Label("GPUs")
                    yield Input(id="job-gpus", placeholder="0", type="number")
            with Vertical(classes="field"):
                yield Label("Name")
                yield Input(id="job-name", placeholder="the script's name", max_length=64)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Queue (ctrl+s)", id="job-submit", variant="primary")
                yield Button("Back (esc)", id="job-back")
            yield StepList(id="job-steps")

    def on_mount(self) -> None:
        self.query_one("#job-choices", OptionList).focus()

    # ----- choosing what to run -------------------------------------------------------------

    @on(OptionList.OptionSelected, "#job-choices")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        files = self.query_one("#job-files", DirectoryTree)
        if event.option.id == PICK_FILE:
            files.remove_class("-hidden")
            files.focus()
            return
        files.add_class("-hidden")
        self.query_one("#job-script", Input).value = str(event.option.id)
        self.query_one("#job-args", Input).focus()

    @on(DirectoryTree.FileSelected, "#job-files")
    def _file_picked(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.query_one("#job-script", Input).value = str(event.path)
        self.query_one("#job-files").add_class("-hidden")
        self.query_one("#job-args", Input).focus()

    # ----- reading the form -----------------------------------------------------------------

    def read_form(self) -> Any:
        """The :class:`Submission` the form asks for; raises ``LanrayError`` with one line."""
        from ..core.errors import LanrayError
        from ..core.submit import Submission

        def text(field: str) -> str:
            return self.query_one(f"#job-{field}", Input).value.strip()

        def number(field: str, label: str) -> float | None:
            raw = text(field)
            if not raw:
                return None
            try:
                value = float(raw)
            except ValueError:
                raise LanrayError(f"{label}: '{raw}' is not a number") from None
            if value < 0:
                raise LanrayError(f"{label}: must not be negative")
            return value

        script, command = text("script"), text("command")
        try:
            args = shlex.split(text("args"))
            argv = shlex.split(command)
        except ValueError as exc:
            raise LanrayError(f"arguments: {exc}") from None
        if script and argv:
            raise LanrayError("give a script or a command, not both")
        if not script and not argv:
            raise LanrayError("choose a sample job or a script, or type a command")
        if argv and args:
            argv += args
            args = []
        return Submission(
            script=Path(script) if script else None,
            command=argv,
            args=args,
            num_cpus=number("cpus", "CPUs"),
            num_gpus=number("gpus", "GPUs"),
            name=text("name") or None,
        )

    # ----- submitting -----------------------------------------------------------------------

    @on(Input.Submitted)
    def _enter(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    @on(Button.Pressed, "#job-submit")
    def _submit_pressed(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#job-back")
    def _back_pressed(self) -> None:
        self.action_back()

    def action_submit(self) -> None:
        from ..core.errors import LanrayError

        if self.busy:
            return
        steps = self.query_one(StepList)
        steps.reset()
        try:
            sub = self.read_form()
        except LanrayError as exc:
            steps.finish(str(exc))
            return
        self.busy = True
        steps.add("uploading the working dir" if sub.script else "queueing the command")
        self._submit(sub)

    @work(thread=True, exclusive=True, exit_on_error=False, group="submit")
    def _submit(self, sub: Any) -> None:
        from .. import messages
        from ..core.errors import LanrayError
        from ..core.protocol import SubmitRequest
        from ..core.submit import build_spec, submitter

        try:
            spec = build_spec(self.session.paths, sub)
            req = SubmitRequest.of(spec=spec, submitter=submitter())
            job = self.link.request(req, timeout=30.0)
        except LanrayError as exc:
            self.post_message(JobQueued(None, messages.describe(exc)))
            return
        except (OSError, KeyError, TypeError, ValueError) as exc:
            self.post_message(JobQueued(None, f"could not queue the job: {exc}"))
            return
        self.post_message(JobQueued(job))

    def on_job_queued(self, message: JobQueued) -> None:
        self.busy = False
        steps = self.query_one(StepList)
        if message.job is None:
            steps.finish(message.error)
            return
        steps.finish()
        self.dismiss(message.job.id)

    def action_back(self) -> None:
        if self.busy:
            self.notify("the job is being queued…", severity="warning")
            return
        self.dismiss(None)
