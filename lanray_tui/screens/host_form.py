"""Host a cluster: name, what this machine lends, runtime; Enter accepts the defaults.

Submitting starts the agent exactly as ``lanray-tui host`` does (refuse if one runs, spawn,
wait until Ray is ready) in a thread worker, and shows each step as it happens.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, RadioButton, RadioSet, Static

from .. import messages
from ..core import texts
from ..widgets.steps import StepList
from .session import Session

DOCKER_LABEL = "docker (Ray in a container)"

# (input id, config key, agent option, label, what empty means)
LEND_FIELDS = (
    ("cpus", "lend.cpus", "--cpus", "CPUs to lend", "all"),
    ("gpus", "lend.gpus", "--gpus", "GPUs to lend", "all"),
    ("memory", "lend.memory_gb", "--memory-gb", "Memory (GiB)", "Ray's default"),
)


class FormError(Exception):
    """A field holds something the agent would refuse (the message says which and why)."""


def _blank(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


class HostFormScreen(Screen[None]):
    """The host form; on success it asks the app for the cluster screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "submit", "Start hosting"),
    ]

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.starting = False

    def compose(self) -> ComposeResult:
        cfg = self.session.cfg
        with VerticalScroll(id="host-form"):
            yield Static("Host a cluster", classes="screen-title")
            yield Static(
                "Enter accepts the defaults (from your config). Empty CPUs/GPUs lend all.",
                classes="hint",
            )
            with Vertical(classes="field"):
                yield Label("Cluster name")
                yield Input(cfg["cluster_name"], id="name", max_length=64)
            with Horizontal(id="lend-row"):
                for field_id, key, _, label, empty in LEND_FIELDS:
                    with Vertical(classes="field"):
                        yield Label(label)
                        yield Input(
                            _blank(cfg[key]),
                            placeholder=empty,
                            id=field_id,
                            type="number" if field_id == "memory" else "integer",
                        )
            with Horizontal(id="runtime-row"):
                yield Label("Runtime", id="runtime-label")
                docker = cfg["runtime.kind"] == "docker"
                with RadioSet(id="runtime"):
                    yield RadioButton("native", value=not docker, id="runtime-native")
                    yield RadioButton(DOCKER_LABEL, value=docker, id="runtime-docker")
            with Horizontal(id="host-buttons"):
                yield Button("Start hosting", id="start", variant="primary")
                yield Button("Back", id="back")
            yield StepList(id="host-steps")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    # ----- reading the form ---------------------------------------------------------------

    def read_form(self) -> tuple[list[str], Any]:
        """The agent's extra argv and the config it will run with; raises FormError."""
        from ..core.errors import ConfigError

        cfg = self.session.cfg
        name = self.query_one("#name", Input).value.strip()
        overrides: dict[str, Any] = {"cluster_name": name}
        extra: list[str] = []
        if name != cfg["cluster_name"]:
            extra += ["--name", name]
        for field_id, key, option, label, empty in LEND_FIELDS:
            raw = self.query_one(f"#{field_id}", Input).value.strip()
            value: int | float | None
            try:
                if not raw:
                    value = None
                elif field_id == "memory":
                    value = float(raw)
                else:
                    value = int(raw)
            except ValueError:
                kind = "a number" if field_id == "memory" else "a whole number"
                raise FormError(f"{label}: '{raw}' is not {kind}") from None
            overrides[key.replace(".", "__")] = value
            if value == cfg[key]:
                continue
            if value is None:
                # The agent takes numbers on its command line, not "all" over a config value.
                raise FormError(
                    f"{label}: your config sets {key} = {cfg[key]}; enter a number "
                    f"(or remove {key} from the config to lend {empty})"
                )
            extra += [option, _blank(value)]
        runtime = runtime_choice(self)
        overrides["runtime__kind"] = runtime
        if runtime != cfg["runtime.kind"]:
            extra += ["--runtime", runtime]
        try:
            checked = cfg.with_overrides(**overrides)
        except ConfigError as exc:
            raise FormError(str(exc)) from None
        return extra, checked

    # ----- submitting ---------------------------------------------------------------------

    @on(Input.Submitted)
    def _enter(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#back")
    def _back_pressed(self) -> None:
        self.action_back()

    def action_submit(self) -> None:
        if self.starting:
            return
        steps = self.query_one(StepList)
        steps.reset()
        try:
            extra, checked = self.read_form()
        except FormError as exc:
            steps.finish(str(exc))
            return
        self.starting = True
        self.query_one("#host-form").add_class("-busy")
        for widget in self.query("Input, Button, RadioSet"):
            widget.disabled = True
        steps.add(texts.CHECKING_NO_AGENT)
        self._start_host(extra, float(checked["ray.start_timeout_s"]) + 15)

    @work(thread=True, exclusive=True, exit_on_error=False, group="start")
    def _start_host(self, extra: list[str], timeout: float) -> None:
        from ..core import lifecycle
        from ..core.errors import LanrayError

        paths = self.session.paths
        try:
            lifecycle.refuse_if_running(paths)
            pid = lifecycle.spawn_agent(paths, "host", self.session.config_file, extra)
            self.post_message(messages.StartProgress(texts.agent_started(pid)))
            info = lifecycle.wait_ready(paths, pid, timeout, self._progress)
        except LanrayError as exc:
            self.post_message(messages.StartFinished(None, messages.describe(exc)))
            return
        except OSError as exc:
            self.post_message(messages.StartFinished(None, f"could not start the agent: {exc}"))
            return
        self.post_message(messages.StartFinished(info))

    def _progress(self, step: str) -> None:
        self.post_message(messages.StartProgress(step))

    def on_start_progress(self, message: messages.StartProgress) -> None:
        self.query_one(StepList).add(message.step)

    def on_start_finished(self, message: messages.StartFinished) -> None:
        steps = self.query_one(StepList)
        self.starting = False
        if message.info is None:
            steps.finish(message.error)
            for widget in self.query("Input, Button, RadioSet"):
                widget.disabled = False
            self.query_one("#host-form").remove_class("-busy")
            self.query_one("#name", Input).focus()
            return
        steps.finish()
        self.post_message(messages.ShowCluster(message.info))

    def action_back(self) -> None:
        if self.starting:
            self.notify(
                "the agent is starting; it keeps running if you leave (q quits the TUI)",
                severity="warning",
            )
            return
        self.post_message(messages.ShowMenu())

    def commands(self) -> list[tuple[str, str, str]]:
        return [("Start hosting", "Start the agent with this form", "submit")]


def runtime_choice(screen: Screen[Any]) -> str:
    """ "docker" when the screen's runtime radio set has docker pressed, else "native"."""
    pressed = screen.query_one("#runtime", RadioSet).pressed_button
    return "docker" if pressed is not None and pressed.id == "runtime-docker" else "native"
