"""The full-screen TUI: a thin App that picks the screen and routes navigation.

At start it loads the config and asks whether this node's agent runs (in a worker): if it
does, it re-attaches to the cluster screen; otherwise it shows the menu. Screens ask for
other screens with the messages in :mod:`lanray_tui.messages`. Quitting leaves the agent
running: it is a separate process.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Static

from . import messages

if TYPE_CHECKING:
    from .core.models import AgentInfo
    from .core.paths import Paths
    from .screens.session import Session


class LanrayApp(App[int]):
    """``initial`` ("host" or "join") opens that screen instead of the menu when no agent
    runs; ``watch`` replaces LAN discovery on the join screen (tests pass a fake)."""

    CSS_PATH = "styles/app.tcss"
    TITLE = "lanray-tui"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("question_mark", "help", "Keys")]

    def __init__(
        self, config_file: Path | None = None, *, initial: str | None = None, watch: Any = None
    ) -> None:
        super().__init__()
        self.config_file = config_file
        self.initial = initial
        self.session: Session | None = None
        self.config_ready = False
        self.agent_info: AgentInfo | None = None
        self.problem = ""
        self._pending: str | None = None  # "host" or "join" asked for before the config loaded
        self._watch = watch

    def compose(self) -> ComposeResult:
        yield Static("lanray-tui: looking for this node's agent…", id="probing")

    async def on_mount(self) -> None:
        from .core.paths import Paths

        if self.initial is None and not Paths.from_env().socket.exists():
            # No socket, no agent: the menu at once, without a probe's thread and message.
            await self.on_agent_probed(messages.AgentProbed(None, ""))
            return
        self._probe()

    # ----- start-up -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="probe")
    def _probe(self) -> None:
        """Look for this node's agent, then load the config: the menu needs only the first."""
        from .core.errors import LanrayError
        from .core.paths import Paths

        try:
            info = _running_agent(Paths.from_env())
        except (LanrayError, KeyError, TypeError) as exc:
            info, problem = None, f"the agent on this node did not answer: {messages.describe(exc)}"
        else:
            problem = ""
        self.post_message(messages.AgentProbed(info, problem))

    @work(thread=True, exclusive=True, exit_on_error=False, group="config")
    def _load_config(self) -> None:
        """The config and the session the other screens need. Loaded once the menu has been
        drawn: its imports (YAML, the core) would hold the interpreter lock while the main
        thread paints the first frame."""
        from .core import config
        from .core.errors import LanrayError
        from .screens.session import Session

        try:
            cfg = config.load(self.config_file)
            self.post_message(messages.ConfigLoaded(Session(self.config_file, cfg, cfg.paths())))
        except LanrayError as exc:
            self.post_message(messages.ConfigLoaded(None, messages.describe(exc)))

    async def on_agent_probed(self, message: messages.AgentProbed) -> None:
        self.agent_info = message.info
        self.problem = message.error
        if message.info is None and self.initial is None:
            await self._show(self._menu_screen())
            self.call_after_refresh(self._load_config)
        else:
            self._load_config()

    async def on_config_loaded(self, message: messages.ConfigLoaded) -> None:
        self.session = message.session
        self.config_ready = True
        if message.error:
            self.problem = message.error
        pending, self._pending = self._pending, None
        if self.session is not None and self.agent_info is not None:
            await self._show(self._cluster_screen(self.agent_info))
        elif self.session is not None and (pending or self.initial) == "host":
            await self.on_show_host_form(messages.ShowHostForm())
        elif self.session is not None and (pending or self.initial) == "join":
            await self.on_show_join(messages.ShowJoin())
        elif len(self.screen_stack) < 2:
            await self._show(self._menu_screen())
        elif message.error:
            from .screens.menu import MenuScreen

            if isinstance(self.screen, MenuScreen):
                self.screen.set_problem(self._menu_problem())

    # ----- navigation ---------------------------------------------------------------------

    async def _show(self, screen: Screen[Any]) -> None:
        """Make ``screen`` the only one above the start screen."""
        while len(self.screen_stack) > 2:
            self.pop_screen()
        if len(self.screen_stack) == 2:
            await self.switch_screen(screen)
        else:
            await self.push_screen(screen)

    def _menu_problem(self) -> str:
        if self.config_ready and self.session is None:
            return f"{self.problem}\nFix it, then start lanray-tui again."
        return self.problem

    def _menu_screen(self) -> Screen[Any]:
        from .screens.menu import MenuScreen

        return MenuScreen(problem=self._menu_problem())

    def _cluster_screen(self, info: Any) -> Screen[Any]:
        from .screens.cluster import ClusterScreen

        assert self.session is not None
        return ClusterScreen(self.session, info)

    async def on_show_menu(self, message: messages.ShowMenu) -> None:
        self.problem = ""
        await self._show(self._menu_screen())

    async def on_show_host_form(self, message: messages.ShowHostForm) -> None:
        from .screens.host_form import HostFormScreen

        if not self.config_ready:
            self._pending = "host"
            return
        if self.session is None:
            self.notify("the configuration has a problem: see the menu", severity="error")
            return
        await self._show(HostFormScreen(self.session))

    async def on_show_join(self, message: messages.ShowJoin) -> None:
        from .screens.join import JoinScreen

        if not self.config_ready:
            self._pending = "join"
            return
        if self.session is None:
            self.notify("the configuration has a problem: see the menu", severity="error")
            return
        await self._show(JoinScreen(self.session, watch=self._watch))

    async def on_show_cluster(self, message: messages.ShowCluster) -> None:
        await self._show(self._cluster_screen(message.info))

    # ----- help and the command palette ---------------------------------------------------

    def action_help(self) -> None:
        from .screens.help import HelpScreen, key_entries

        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(key_entries(self.screen)))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Keys", "List every key of this screen", self.action_help)
        commands: Callable[[], list[tuple[str, str, str]]] | None = getattr(
            screen, "commands", None
        )
        if commands is not None:
            for title, help_text, action in commands():
                yield SystemCommand(title, help_text, partial(screen.run_action, action))


def _running_agent(paths: Paths) -> AgentInfo | None:
    """``lifecycle.running_agent`` without importing ``lifecycle``: that module loads the
    agent, discovery and pairing code (~70 ms of imports) which the first frame does not
    need. Same call, same answer; it can go once ``lifecycle`` imports those lazily."""
    from .core.control import ControlClient
    from .core.errors import NotRunningError

    try:
        return ControlClient(paths.socket).info(timeout=3.0)
    except NotRunningError:
        return None


def _exit_even_if_workers_block(code: int) -> None:
    """Leave now if a worker thread is still blocked in the core (e.g. waiting for Ray).

    Thread workers cannot be killed; the interpreter would wait for them at exit. The agent
    is a separate process, so nothing is lost by not waiting.
    """
    deadline = time.monotonic() + 1.0
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and t is not main and not t.daemon for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_app(config_file: Path | None, initial: str | None = None) -> int:
    """Run the TUI until the user quits; returns the exit code. ``initial`` ("host" or
    "join", for ``lanray-tui host`` / ``join`` in a terminal) skips the menu."""
    app = LanrayApp(config_file, initial=initial)
    result = app.run()
    code = result if isinstance(result, int) else (app.return_code or 0)
    _exit_even_if_workers_block(code)
    return code
