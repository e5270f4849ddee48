"""Join a cluster: hosts found on the LAN, live; Enter on one, type its join code, Enter.

Without discovery (or for a host it cannot see) ``a`` joins by address and token, and ``r``
rejoins the cluster whose credentials this node kept. Each start shows its steps as they
happen (finding the host, pairing, starting Ray, registered).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, RadioButton, RadioSet, Static

from .. import messages
from ..widgets.host_list import HostList, describe_host
from ..widgets.steps import StepList
from .host_form import DOCKER_LABEL, runtime_choice
from .session import Session

if TYPE_CHECKING:
    from ..core.config import Config
    from ..core.discovery import FoundHost

    Watch = Callable[[Config, Callable[[FoundHost], None], threading.Event], None]


class JoinScreen(Screen[None]):
    """``watch`` replaces the core's discovery (tests pass a fake; None: the core's)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("a", "manual", "By address"),
        Binding("r", "rejoin", "Rejoin last"),
    ]

    class DoctorDone(Message):
        """The network doctor's checklist for a join that failed (``run`` numbers it)."""

        def __init__(self, run: int, text: str) -> None:
            super().__init__()
            self.run = run
            self.text = text

    def __init__(self, session: Session, watch: Watch | None = None) -> None:
        super().__init__()
        self.session = session
        self._watch = watch
        self._stop = threading.Event()
        self.target: FoundHost | None = None
        self.busy = False
        self.discovery_note = ""  # why discovery is not running, once we know
        self._ticks = 0
        self._joining: str | None = None  # the host of the join under way (None: the last)
        self._doctor_runs = 0

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="join-body"):
            yield Static("Join a cluster", classes="screen-title")
            yield Static(
                "Looking for hosts on the LAN…", id="discovery-state", classes="hint", markup=False
            )
            yield HostList(id="hosts")
            yield Static("", id="host-detail", classes="hint", markup=False)
            with Vertical(id="code-form", classes="subform"):
                yield Label("", id="code-label")
                yield Input(
                    placeholder="join code shown on the host, e.g. 7-tiger-canvas", id="code"
                )
            with Vertical(id="manual-form", classes="subform"):
                yield Label("Join by address and token ('lanray-tui token' on the host)")
                with Horizontal():
                    yield Input(placeholder="host address, e.g. 10.0.0.5[:6379]", id="address")
                    yield Input(placeholder="token", id="token", password=True)
            docker = self.session.cfg["runtime.kind"] == "docker"
            with Horizontal(id="runtime-row"):
                yield Label("Runtime", id="runtime-label")
                with RadioSet(id="runtime"):
                    yield RadioButton("native", value=not docker, id="runtime-native")
                    yield RadioButton(DOCKER_LABEL, value=docker, id="runtime-docker")
            yield StepList(id="join-steps")
            yield Static("", id="join-doctor", classes="hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#code-form").display = False
        self.query_one("#manual-form").display = False
        self.query_one(HostList).focus()
        self._watch_lan()
        self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        self._stop.set()

    # ----- discovery ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="discovery")
    def _watch_lan(self) -> None:
        from ..core.discovery import watch as core_watch
        from ..core.errors import LanrayError

        watch = self._watch or core_watch
        try:

            def found(host: FoundHost) -> None:
                self.post_message(messages.HostFound(host))

            watch(self.session.cfg, found, self._stop)
        except (LanrayError, OSError) as exc:
            self.post_message(messages.DiscoveryStopped(f"LAN discovery stopped: {exc}"))

    def on_host_found(self, message: messages.HostFound) -> None:
        hosts = self.query_one(HostList)
        first = not hosts.hosts
        hosts.add_host(message.host)
        self.query_one("#discovery-state", Static).update(
            f"{len(hosts.hosts)} found on the LAN; ↑↓ choose, Enter joins "
            "(a: by address, r: rejoin last)"
        )
        if first:
            self._show_detail()

    def on_discovery_stopped(self, message: messages.DiscoveryStopped) -> None:
        self.discovery_note = message.reason
        self.query_one("#discovery-state", Static).update(
            f"{message.reason}. Press a to join by address and token, r to rejoin."
        )
        if not self.busy and not self.query_one(HostList).hosts:
            self.action_manual()

    def _tick(self) -> None:
        self._ticks += 1
        hosts = self.query_one(HostList)
        hosts.redraw()
        self._show_detail()
        if not hosts.hosts and not self.discovery_note and self._ticks >= 3:
            self.query_one("#discovery-state", Static).update(
                f"No host has answered in {self._ticks} s (still asking every second). "
                "a: join by address and token · r: rejoin the last cluster"
            )

    @on(DataTable.RowHighlighted, "#hosts")
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        host = self.query_one(HostList).highlighted()
        self.query_one("#host-detail", Static).update(describe_host(host) if host else "")

    # ----- choosing a host and typing its code --------------------------------------------

    @on(DataTable.RowSelected, "#hosts")
    def _selected(self) -> None:
        host = self.query_one(HostList).highlighted()
        if host is None or self.busy:
            return
        if host.verified == "forged":
            self.notify(
                f"the beacon of '{host.cluster_name}' is forged: not joining", severity="error"
            )
            return
        if not host.compatible:
            self.notify(f"cannot join '{host.cluster_name}': {host.why_not}", severity="error")
            return
        self.target = host
        self.query_one("#manual-form").display = False
        self.query_one("#code-label", Label).update(
            f"Join code for '{host.cluster_name}' at {host.address} (Esc cancels)"
        )
        self.query_one("#code-form").display = True
        code = self.query_one("#code", Input)
        code.value = ""
        code.focus()

    @on(Input.Submitted, "#code")
    def _code_entered(self, event: Input.Submitted) -> None:
        event.stop()
        code = event.value.strip()
        if self.target is None or not code or self.busy:
            return
        self._begin(f"joining '{self.target.cluster_name}' at {self.target.address}")
        self._joining = self.target.address
        self._join_with_code(self.target.address, code)

    # ----- by address and token, or again ------------------------------------------------

    def action_manual(self) -> None:
        if self.busy:
            return
        self.query_one("#code-form").display = False
        self.query_one("#manual-form").display = True
        self.query_one("#address", Input).focus()

    @on(Input.Submitted, "#address")
    def _address_entered(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#token", Input).focus()

    @on(Input.Submitted, "#token")
    def _token_entered(self, event: Input.Submitted) -> None:
        event.stop()
        address = self.query_one("#address", Input).value.strip()
        token = event.value.strip()
        if self.busy:
            return
        if not address or not token:
            self.query_one(StepList).finish("give both the host's address and the cluster token")
            return
        self._begin(f"joining {address} with its token")
        self._joining = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
        self._join_with_token(address, token)

    def action_rejoin(self) -> None:
        if self.busy:
            return
        self._begin("rejoining the cluster this node paired with before")
        self._joining = None
        self._join_again()

    # ----- the workers --------------------------------------------------------------------

    def _begin(self, what: str) -> None:
        self.busy = True
        steps = self.query_one(StepList)
        steps.reset()
        steps.add(what)
        for widget in self.query("Input, RadioSet"):
            widget.disabled = True
        self._doctor_runs += 1  # a checklist still coming for an earlier join is stale
        self.query_one("#join-doctor", Static).update("")

    def _progress(self, step: str) -> None:
        self.post_message(messages.StartProgress(step))

    def _run(self, name: str, *args: Any) -> None:
        """Call ``lifecycle.NAME(cfg, *args, progress, config_file)``; post the outcome."""
        from ..core import lifecycle
        from ..core.errors import LanrayError

        start = getattr(lifecycle, name)  # looked up per call: tests replace it
        runtime = self.app.call_from_thread(runtime_choice, self)
        cfg = self.session.cfg
        extra: list[str] = []
        try:
            if runtime != cfg["runtime.kind"]:
                cfg = cfg.with_overrides(runtime__kind=runtime)
                extra = ["--runtime", runtime]
            info = start(
                cfg,
                *args,
                progress=self._progress,
                config_file=self.session.config_file,
                extra=extra,
            )
        except LanrayError as exc:
            self.post_message(messages.StartFinished(None, messages.describe(exc)))
            return
        except OSError as exc:
            self.post_message(messages.StartFinished(None, f"could not join: {exc}"))
            return
        self.post_message(messages.StartFinished(info))

    @work(thread=True, exclusive=True, exit_on_error=False, group="start")
    def _join_with_code(self, address: str, code: str) -> None:
        self._run("join_with_code", address, code)

    @work(thread=True, exclusive=True, exit_on_error=False, group="start")
    def _join_with_token(self, address: str, token: str) -> None:
        self._run("join_with_token", address, token)

    @work(thread=True, exclusive=True, exit_on_error=False, group="start")
    def _join_again(self) -> None:
        self._run("join_again", None)

    def on_start_progress(self, message: messages.StartProgress) -> None:
        self.query_one(StepList).add(message.step)

    def on_start_finished(self, message: messages.StartFinished) -> None:
        self.busy = False
        steps = self.query_one(StepList)
        if message.info is None:
            steps.finish(message.error)
            self.query_one("#join-doctor", Static).update("Running the network doctor…")
            self._diagnose(self._doctor_runs, self._joining)
            for widget in self.query("Input, RadioSet"):
                widget.disabled = False
            if self.query_one("#code-form").display:
                self.query_one("#code", Input).focus()
            elif self.query_one("#manual-form").display:
                self.query_one("#address", Input).focus()
            return
        steps.finish()
        self._stop.set()
        self.post_message(messages.ShowCluster(message.info))

    # ----- the network doctor, when a join failed ----------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="doctor")
    def _diagnose(self, run: int, target: str | None) -> None:
        from ..core import doctor_run
        from ..core.errors import LanrayError

        cfg = self.session.cfg
        try:
            report = doctor_run.diagnose(cfg, doctor_run.resolve(cfg, target))
            text = "\n".join([f"Network doctor, host {report.host}:", *report.lines()])
        except (LanrayError, OSError) as exc:
            text = f"Network doctor: {exc}"
        self.post_message(self.DoctorDone(run, text))

    def on_join_screen_doctor_done(self, message: DoctorDone) -> None:
        if message.run == self._doctor_runs:
            self.query_one("#join-doctor", Static).update(message.text)

    def action_back(self) -> None:
        if self.busy:
            self.notify(
                "joining; the agent keeps starting if you leave (q quits the TUI)",
                severity="warning",
            )
            return
        for form in ("#code-form", "#manual-form"):
            if self.query_one(form).display:
                self.query_one(form).display = False
                self.query_one(HostList).focus()
                return
        self.post_message(messages.ShowMenu())

    def commands(self) -> list[tuple[str, str, str]]:
        return [
            ("Join by address and token", "Type the host's address and token", "manual"),
            ("Rejoin the last cluster", "Use the credentials kept from pairing", "rejoin"),
        ]
