"""The cluster as this node's agent sees it: header, nodes, logs, jobs.

Every socket call runs in a thread worker. The status poll never overlaps itself: the next
one is scheduled when the last one has been handled. Log streams push lines into their
pane's feed, which backs the stream off while the pane is behind. Leaving the screen
interrupts every call and stream in flight (see :mod:`.agent_link`). The jobs tab is
:class:`~.jobs_pane.JobsPane`; the questions, the palette's entries and which lending
request a key sends are :mod:`.cluster_texts`.
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import get_current_worker

from .. import messages
from ..core import lend_time, texts
from ..widgets.header import CODE_NOT_AVAILABLE, ClusterHeader
from ..widgets.job_table import JobTable
from ..widgets.log_pane import LogPane
from ..widgets.node_table import NodeTable
from .agent_link import AgentLink, pump_lines
from .cluster_texts import COMMANDS, leave_question, lending_toggle, stop_question
from .confirm import ConfirmScreen
from .jobs_pane import JobsPane
from .session import Session

if TYPE_CHECKING:
    from ..core.models import AgentInfo, NodeInfo
    from ..core.protocol import LendingReply, Request

POLL_INTERVAL_S = 1.0
POLL_INTERVAL_GONE_S = 2.0
CODE_INTERVAL_S = 10.0
LOG_BACKLOG = 200
LOG_RETRY_S = 2.0
LOG_SOURCES = ("ray", "agent")


class ClusterScreen(Screen[None]):
    """Re-attaches to a running agent, or shows the one just started."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "app.quit", "Quit (node keeps running)"),
        Binding("L", "leave", "Leave cluster"),
        Binding("1", "show('nodes')", "Nodes", show=False),
        Binding("2", "show('ray')", "Ray log", show=False),
        Binding("3", "show('agent')", "Agent log", show=False),
        Binding("4", "show('jobs')", "Jobs", show=False),
        Binding("n", "new_job", "New job", show=False),
        Binding("c", "cancel_job", "Cancel job", show=False),
        Binding("p", "pause_resume", "Pause/resume lending", show=False),
        Binding("R", "restart_ray", "Restart Ray/container", show=False),
        Binding("S", "stop_start_ray", "Stop/start Ray/container", show=False),
        Binding("z", "zoom", "Zoom pane", show=False),
        Binding("escape", "back", "Menu (when stopped)", show=False),
    ]

    def __init__(self, session: Session, agent: AgentInfo) -> None:
        super().__init__()
        self.session = session
        self.agent = agent
        self.link = AgentLink(session.paths.socket, timeout=8.0)
        self.agent_gone = False
        self.leaving = False
        self.polls = 0
        self._poll_timer: Timer | None = None
        self._code_timer: Timer | None = None
        self._log_started: set[str] = set()

    def compose(self) -> ComposeResult:
        yield ClusterHeader(self.agent, id="cluster-header")
        nodes = NodeTable(id="nodes")
        nodes.border_title = "Nodes (1)"
        yield nodes
        save_dir = self.session.paths.state_dir / "saved-logs"
        with TabbedContent(initial="tab-ray", id="panes"):
            with TabPane("Logs: Ray (2)", id="tab-ray"):
                yield LogPane("ray", save_dir=save_dir, id="log-ray")
            with TabPane("Logs: agent (3)", id="tab-agent"):
                yield LogPane("agent", save_dir=save_dir, id="log-agent")
            with TabPane("Jobs (4)", id="tab-jobs"):
                yield JobsPane(
                    self.session,
                    self.link,
                    node_names=self._node_names,
                    agent_gone=lambda: self.agent_gone,
                    id="jobs-box",
                )
        yield Footer()

    def on_mount(self) -> None:
        self._poll_status()
        self._jobs().poll()
        for source in LOG_SOURCES:
            self._start_log(source, LOG_BACKLOG)
        if self.agent.role == "host":
            self._fetch_code()
        self.query_one(NodeTable).focus()
        # What exists once the screen is up (Textual, Rich, the widgets) lives as long as the
        # app: out of the collector's way, a full collection no longer walks it, which
        # otherwise cost a keystroke now and then a pause of tens of ms.
        self.call_after_refresh(gc.freeze)

    def on_unmount(self) -> None:
        # Wakes every blocked read, so the workers (and the process exit) never hang.
        self.link.close()

    def pane(self, source: str) -> LogPane:
        return self.query_one(f"#log-{source}", LogPane)

    # ----- status poll ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="status")
    def _poll_status(self) -> None:
        from ..core.errors import LanrayError, NotRunningError
        from ..core.protocol import StatusRequest

        try:
            result = self.link.request(StatusRequest(), timeout=8.0)
            nodes = result.node_infos()
        except NotRunningError as exc:
            self.post_message(messages.StatusPolled(None, None, messages.describe(exc), True))
            return
        except (LanrayError, KeyError, TypeError, ValueError) as exc:
            # Ray's dashboard may be down while the agent is up: still show the agent's state.
            agent: AgentInfo | None = None
            with contextlib.suppress(LanrayError):
                agent = self.link.info(timeout=3.0)
            self.post_message(messages.StatusPolled(None, agent, messages.describe(exc)))
            return
        self.post_message(
            messages.StatusPolled(nodes, result.agent, free=result.free, ends_at=result.ends_at)
        )

    def on_status_polled(self, message: messages.StatusPolled) -> None:
        self.polls += 1
        header = self.query_one(ClusterHeader)
        if message.agent is not None:
            self.agent = message.agent
            header.set_agent(message.agent)
        if message.nodes is not None:
            self.query_one(NodeTable).update_nodes(message.nodes)
            header.set_nodes(self.query_one(NodeTable).nodes, message.free)
            self._name_ray_log(message.nodes)
        was_gone = self.agent_gone
        self.agent_gone = message.agent_gone
        if self.leaving:
            header.set_problem("leaving the cluster…")
        elif message.agent_gone:
            header.set_problem("the agent has stopped on this node (Esc: menu, q: quit)")
            if not was_gone:
                self.notify("the agent has stopped on this node", severity="warning")
        elif message.error:
            header.set_problem(message.error)
        elif message.ends_at and message.ends_at - time.time() <= lend_time.WARN_BEFORE_S:
            header.set_problem(lend_time.ends_line(message.ends_at))
        else:
            header.set_problem("")
        delay = POLL_INTERVAL_GONE_S if message.agent_gone else POLL_INTERVAL_S
        self._poll_timer = self.set_timer(delay, self._poll_status)

    def _name_ray_log(self, nodes: list[NodeInfo]) -> None:
        """Under the docker runtime this node's Ray log is its container's log stream."""
        mine = next((n for n in nodes if n.ip == self.agent.node_ip and n.state == "ALIVE"), None)
        if mine is None or not mine.runtime:
            return
        label = "Logs: container (2)" if mine.runtime.startswith("docker") else "Logs: Ray (2)"
        tab = self.query_one(TabbedContent).get_tab("tab-ray")
        if str(tab.label) != label:
            tab.label = label

    def action_node_details(self) -> None:
        from .node_details import NodeDetailsScreen

        table = self.query_one(NodeTable)
        node_id = table.selected_id()
        if node_id is None:
            self.notify("no node selected", severity="warning")
            return
        self.app.push_screen(NodeDetailsScreen(lambda: table.lookup(node_id)))

    # ----- job queue (the pane does the work; the job table binds these) --------------

    def _jobs(self) -> JobsPane:
        return self.query_one(JobsPane)

    def _node_names(self) -> dict[str, str]:
        """Node names by IP and by id, for the jobs pane (none while the screen goes away)."""
        names: dict[str, str] = {}
        for table in self.query(NodeTable):
            for n in table.nodes:
                names[n.ip] = names[n.node_id] = n.name
        return names

    def action_new_job(self) -> None:
        self.action_show("jobs")
        self._jobs().new_job()

    def action_cancel_job(self) -> None:
        self._jobs().cancel_selected()

    def action_retry_job(self) -> None:
        self._jobs().retry_selected()

    def action_job_details(self) -> None:
        self._jobs().show_selected()

    # ----- this node's Ray: lending, restart, stop ------------------------------------------

    def action_pause_resume(self) -> None:
        self._node_op(*lending_toggle(self.agent))

    def action_restart_ray(self) -> None:
        from ..core.protocol import RestartRayRequest

        self._node_op(RestartRayRequest(), "restarting this node's Ray")

    def action_stop_start_ray(self) -> None:
        from ..core.protocol import ResumeRequest, StopRayRequest

        if self.agent.lending.get("state") == "stopped":
            self._node_op(ResumeRequest(), "starting this node's Ray again")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._node_op(StopRayRequest(), "stopped this node's Ray")

        self.app.push_screen(ConfirmScreen(stop_question(self.agent), yes="Stop"), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="node-op")
    def _node_op(self, req: Request[LendingReply], done: str) -> None:
        from ..core.errors import LanrayError

        timeout = float(self.session.cfg["lending.drain_deadline_s"]) + 60
        try:
            self.link.request(req, timeout=timeout)
        except LanrayError as exc:
            self.post_message(messages.NodeActionDone(messages.describe(exc), False))
            return
        self.post_message(messages.NodeActionDone(done, True))

    def on_node_action_done(self, message: messages.NodeActionDone) -> None:
        self.notify(message.text, severity="information" if message.ok else "error")
        self._jobs().poll()

    # ----- join code (host) ---------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="code")
    def _fetch_code(self) -> None:
        from ..core.errors import LanrayError
        from ..core.protocol import CodeRequest

        try:
            got = self.link.request(CodeRequest(), timeout=5.0)
        except LanrayError:
            self.post_message(messages.JoinCodeFetched("", 0, CODE_NOT_AVAILABLE))
            return
        error = (
            "" if got.code else f"pairing is {got.state or 'closed'}: 'lanray-tui code' opens it"
        )
        self.post_message(
            messages.JoinCodeFetched(got.code, float(got.expires_in), error, got.pairing_summary)
        )

    def on_join_code_fetched(self, message: messages.JoinCodeFetched) -> None:
        self.query_one(ClusterHeader).set_code(
            message.code, message.expires_in, message.error, message.failures
        )
        delay = CODE_INTERVAL_S
        if message.code and 0 < message.expires_in < delay:
            delay = message.expires_in + 0.5
        self._code_timer = self.set_timer(delay, self._fetch_code)

    # ----- logs -----------------------------------------------------------------------------

    def _start_log(self, source: str, backlog: int) -> None:
        feed = self.pane(source).feed

        def stream() -> None:
            from ..core.protocol import LogsRequest

            worker = get_current_worker()
            req = LogsRequest(source=source, lines=backlog, follow=True)
            items = self.link.stream(req)
            reason = pump_lines(items, feed, worker)
            if reason is not None:
                self.post_message(messages.LogStreamEnded(source, reason))

        self._log_started.add(source)
        self.run_worker(
            stream, thread=True, exclusive=True, exit_on_error=False, group=f"log-{source}"
        )

    def on_log_stream_ended(self, message: messages.LogStreamEnded) -> None:
        pane = self.pane(message.source)
        pane.note = f"stream stopped: {message.reason}; retrying"
        pane.update_status()
        # Only new lines when it comes back: the backlog was shown already.
        self.set_timer(LOG_RETRY_S, lambda: self._restart_log(message.source))

    def _restart_log(self, source: str) -> None:
        if self.is_attached and not self.leaving:
            pane = self.pane(source)
            pane.note = ""
            pane.update_status()
            self._start_log(source, 0)

    # ----- actions --------------------------------------------------------------------------

    def action_show(self, what: str) -> None:
        if what == "nodes":
            self.query_one(NodeTable).focus()
            return
        tabs = self.query_one(TabbedContent)
        tabs.active = f"tab-{what}"
        if what == "jobs":
            self.query_one(JobTable).focus()
        else:
            self.pane(what).view.focus()

    def _active_pane(self) -> LogPane:
        active = self.query_one(TabbedContent).active
        return self.pane("agent" if active == "tab-agent" else "ray")

    async def action_log(self, action: str) -> None:
        """Run a log pane action on the pane on show (for the command palette)."""
        pane = self._active_pane()
        if self.query_one(TabbedContent).active == "tab-jobs":
            self.action_show("ray")
        pane.view.focus()
        await pane.run_action(action)

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
        elif self.focused is not None:
            self.maximize(self.focused)

    def action_back(self) -> None:
        if self.maximized is not None:
            self.minimize()
        elif self.agent_gone and not self.leaving:
            self.post_message(messages.ShowMenu())

    def action_leave(self) -> None:
        if self.leaving:
            return
        question = leave_question(self.agent)
        self.app.push_screen(ConfirmScreen(question, yes="Leave"), self._leave_confirmed)

    def _leave_confirmed(self, yes: bool | None) -> None:
        if not yes:
            return
        self.leaving = True
        self.query_one(ClusterHeader).set_problem("leaving the cluster…")
        self._leave()

    @work(thread=True, exclusive=True, exit_on_error=False, group="leave")
    def _leave(self) -> None:
        from ..core import lifecycle
        from ..core.errors import LanrayError

        try:
            pid = lifecycle.leave(self.session.paths)
        except LanrayError as exc:
            self.post_message(messages.LeaveFinished(None, messages.describe(exc)))
            return
        self.post_message(messages.LeaveFinished(pid))

    def on_leave_finished(self, message: messages.LeaveFinished) -> None:
        self.leaving = False
        if message.error:
            self.query_one(ClusterHeader).set_problem(message.error)
            self.notify(message.error, title="leave failed", severity="error")
            return
        self.notify(texts.left(message.pid))
        self.post_message(messages.ShowMenu())

    def commands(self) -> list[tuple[str, str, str]]:
        return list(COMMANDS)

    @on(TabbedContent.TabActivated, "#panes")
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        event.stop()
