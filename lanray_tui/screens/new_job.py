"""Queue a job: pick a sample job or any script (a file picker), or type a command.

Submitting does what ``lanray-tui submit`` does (build the spec, upload the working dir
from this node, hand it to the agent, which forwards it to the host's queue) in a thread
worker. The screen dismisses with the queued job's id.

Keys typed ahead go where the user meant, however loaded the machine. Textual picks a key's
target (the focused widget) when the app reads the key, but an ordinary Tab binding moves
focus only after the key has travelled through the widget queues up to the app: text typed
right after a Tab went into the field focus was leaving, or into the list (lost). So here the
keys that move focus (Tab, Shift+Tab, Enter on the list) are priority bindings that move it
while the app reads them, and the list gets focus while the form is built (never later, from
a queued callback). Keys that arrive while the form is still being built reach the screen
itself (nothing has focus yet); it hands them back to the app, in order, once the list has it.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events, on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Footer, Input, Label, OptionList, Static
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


def _field(label: str, field: Input) -> Horizontal:
    """One line: the label, then its one-line input."""
    field.compact = True
    return Horizontal(Label(label), field, classes="job-field")


class NewJobScreen(ModalScreen[str | None]):
    """Dismisses with the new job's id, or None when the user backs out."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "submit", "Queue the job"),
        # Priority: they move focus as the app reads the key, before it routes the next one.
        Binding("tab", "next_field", "Next field", show=False, priority=True),
        Binding("shift+tab", "previous_field", "Previous field", show=False, priority=True),
        Binding("enter", "choose", "Choose", show=False, priority=True),
    ]
    # The list has focus as soon as the form is built: set then, before any key reaches it.
    AUTO_FOCUS = "#job-choices"

    def __init__(self, session: Session, link: Any) -> None:
        super().__init__()
        self.session = session
        self.link = link
        self.busy = False
        self._built_at = float("inf")  # monotonic, as Textual stamps its events

    def compose(self) -> ComposeResult:
        from ..core.submit import sample_jobs

        samples = sample_jobs()
        with _Form(id="new-job", classes="dialog"):
            yield Static("New job", classes="screen-title")
            options = [
                Option(_one_row(f"{Path(p).name}  {summary}"), id=p) for p, summary in samples
            ]
            options.append(Option("Another script… (file picker)", id=PICK_FILE))
            yield OptionList(*options, id="job-choices", compact=True)
            if not samples:
                yield Static("sample jobs: not available in this install", classes="hint")
            yield DirectoryTree(Path.cwd(), id="job-files", classes="-hidden")
            yield Static(
                "A script runs with the cluster's Python, its folder uploaded.", classes="hint"
            )
            yield _field("Script", Input(id="job-script", placeholder="path/to/script.py"))
            yield _field("Command", Input(id="job-command", placeholder="or: python -c 'print(1)'"))
            with Horizontal(id="job-row"):
                yield _field("Args", Input(id="job-args", placeholder="--epochs 3"))
                yield _field("CPUs", Input(id="job-cpus", placeholder="default", type="number"))
                yield _field("GPUs", Input(id="job-gpus", placeholder="0", type="number"))
            yield _field(
                "Name", Input(id="job-name", placeholder="the script's name", max_length=64)
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Queue (ctrl+s)", id="job-submit", variant="primary", compact=True)
                yield Button("Back (esc)", id="job-back", compact=True)
            yield StepList(id="job-steps")
        yield Footer()

    def on_mount(self) -> None:
        # AUTO_FOCUS gave the list focus while the form was built (unless the terminal had
        # lost focus: then here, still before any key is handled). Keys stamped before now
        # were routed to the screen itself (nothing had focus): on_key hands them back.
        if self.focused is None:
            self.set_focus(self.query_one("#job-choices", OptionList))
        self._built_at = time.monotonic()

    # ----- moving between fields ------------------------------------------------------------

    def on_key(self, event: events.Key) -> None:
        """A key read while the form was being built: hand it to the app again, now that
        the list has focus, so that it goes where it would have gone (in the order read)."""
        if event.time >= self._built_at:
            return
        event.stop()
        event.prevent_default()
        replay = events.Key(event.key, event.character)
        replay.set_sender(self.app)  # as the terminal's keys are, so bindings see it
        self.app.post_message(replay)

    def _built(self) -> None:
        if self._built_at == float("inf"):
            raise SkipAction()  # still being built: the key goes to the screen, see on_key

    def action_next_field(self) -> None:
        self._built()
        self.focus_next()

    def action_previous_field(self) -> None:
        self._built()
        self.focus_previous()

    def action_choose(self) -> None:
        """Enter on the list: choose its highlighted row (other widgets get Enter as usual)."""
        self._built()
        choices = self.query_one("#job-choices", OptionList)
        option = choices.highlighted_option
        if self.focused is not choices or option is None or option.id is None:
            raise SkipAction()
        self._choose(option.id)

    # ----- choosing what to run -------------------------------------------------------------

    @on(OptionList.OptionSelected, "#job-choices")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        """A click on the list (Enter is action_choose)."""
        event.stop()
        if event.option.id is not None:
            self._choose(event.option.id)

    def _choose(self, choice: str) -> None:
        files = self.query_one("#job-files", DirectoryTree)
        if choice == PICK_FILE:
            files.remove_class("-hidden")
            self.set_focus(files)
            return
        files.add_class("-hidden")
        self.query_one("#job-script", Input).value = choice
        self.set_focus(self.query_one("#job-args", Input))

    @on(DirectoryTree.FileSelected, "#job-files")
    def _file_picked(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.query_one("#job-script", Input).value = str(event.path)
        self.query_one("#job-files").add_class("-hidden")
        self.set_focus(self.query_one("#job-args", Input))

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
