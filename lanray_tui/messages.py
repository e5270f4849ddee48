"""Messages between the UI's workers, screens and the app.

Workers only post these; the handlers own the state. Navigation requests bubble from a
screen to the app, which alone decides what is on screen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from .core.discovery import FoundHost
    from .core.jobs import JobView
    from .core.models import AgentInfo, NodeInfo
    from .screens.session import Session


# ----- navigation (screen -> app) ---------------------------------------------------------


class ShowMenu(Message):
    """Go to the start menu (e.g. after leaving the cluster)."""


class ShowHostForm(Message):
    """Open the form that starts hosting a cluster."""


class ShowJoin(Message):
    """Open the join screen."""


class ShowCluster(Message):
    """Show the cluster this node's agent belongs to."""

    def __init__(self, info: AgentInfo) -> None:
        super().__init__()
        self.info = info


# ----- start-up ----------------------------------------------------------------------------


class AgentProbed(Message):
    """This node's agent was looked for (``info`` is None if none runs)."""

    def __init__(self, info: AgentInfo | None, error: str = "") -> None:
        super().__init__()
        self.info = info
        self.error = error


class ConfigLoaded(Message):
    """The config is loaded (``session``), or why it could not be (``error``, one line)."""

    def __init__(self, session: Session | None, error: str = "") -> None:
        super().__init__()
        self.session = session
        self.error = error


# ----- starting a node (host form, join screen) --------------------------------------------


class StartProgress(Message):
    """One step of starting this node (``"starting"``, ``"pairing with …"`` …)."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step


class StartFinished(Message):
    """The node is up (``info``) or could not start (``error``, one line)."""

    def __init__(self, info: AgentInfo | None, error: str = "") -> None:
        super().__init__()
        self.info = info
        self.error = error


class HostFound(Message):
    """A host answered a query or sent a beacon."""

    def __init__(self, host: FoundHost) -> None:
        super().__init__()
        self.host = host


class DiscoveryStopped(Message):
    """LAN discovery is not running, and why (shown instead of the list)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


# ----- the cluster screen -------------------------------------------------------------------


class StatusPolled(Message):
    """One poll of the agent: nodes and agent info, or what went wrong."""

    def __init__(
        self,
        nodes: list[NodeInfo] | None,
        agent: AgentInfo | None,
        error: str = "",
        agent_gone: bool = False,
        free: dict[str, float] | None = None,
        ends_at: float = 0.0,
    ) -> None:
        super().__init__()
        self.ends_at = ends_at  # when the host ends the cluster (0: never)
        self.nodes = nodes
        self.agent = agent
        self.error = error
        self.agent_gone = agent_gone
        self.free = free  # CPUs, GPUs, memory that Ray has not handed out (None: unknown)

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StatusPolled)


class JoinCodeFetched(Message):
    """The host's current join code (``code`` is empty with ``error`` when there is none)."""

    def __init__(self, code: str, expires_in: float, error: str = "", failures: str = "") -> None:
        super().__init__()
        self.code = code
        self.expires_in = expires_in
        self.error = error
        self.failures = failures  # "3 failed pairing attempts from 10.0.0.9", or ""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JoinCodeFetched)


class LogStreamEnded(Message):
    """A log stream of this node stopped (the agent went away or refused)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__()
        self.source = source
        self.reason = reason


class JobsPolled(Message):
    """One poll of the job queue (``jobs`` is None with ``error`` when it could not be read)."""

    def __init__(self, jobs: list[JobView] | None, notes: list[str], error: str = "") -> None:
        super().__init__()
        self.jobs = jobs
        self.notes = notes
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobsPolled)


class NodeActionDone(Message):
    """A pause, resume, restart or stop of this node's Ray finished (``ok``) or failed."""

    def __init__(self, text: str, ok: bool) -> None:
        super().__init__()
        self.text = text
        self.ok = ok


class LeaveFinished(Message):
    """``leave`` is done (``error`` empty) or failed."""

    def __init__(self, pid: int | None, error: str = "") -> None:
        super().__init__()
        self.pid = pid
        self.error = error


def describe(value: Any) -> str:
    """One line for an exception or value, for notifications."""
    text = str(value).strip().splitlines()
    return text[0] if text else type(value).__name__
