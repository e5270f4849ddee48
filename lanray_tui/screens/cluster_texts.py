"""What the cluster screen asks and offers: its command palette entries, the questions
before leaving or stopping Ray, and which lending request the pause key sends.

Plain data and choices, no widgets: :class:`~.cluster.ClusterScreen` shows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.models import AgentInfo
    from ..core.protocol import LendingReply, Request

#: The command palette's entries: (title, help, the screen's action).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("Leave the cluster", "Stop Ray and the agent on this node", "leave"),
    ("Filter the log", "Show only lines with some text", "log('filter')"),
    ("Toggle log wrap", "Wrap long log lines", "log('toggle_wrap')"),
    ("Toggle log timestamps", "Show when each line arrived", "log('toggle_timestamps')"),
    ("Save the log", "Write the kept log lines to a file", "log('save')"),
    ("Follow the log", "Jump to the end and follow new lines", "log('follow')"),
    ("Show nodes", "Focus the node list", "show('nodes')"),
    (
        "Node details",
        "Bars, sparklines, GPUs and lending of the selected node",
        "node_details",
    ),
    ("Show the Ray log", "This node's Ray output", "show('ray')"),
    ("Show the agent log", "This node's agent output", "show('agent')"),
    ("Show jobs", "The cluster's job queue", "show('jobs')"),
    ("New job", "Queue a sample job, a script or a command", "new_job"),
    ("Cancel the selected job", "Queued or running", "cancel_job"),
    ("Retry the selected job", "A failed, lost or cancelled one", "retry_job"),
    ("Pause or resume lending", "Drain this node, or lend it again", "pause_resume"),
    ("Restart this node's Ray", "Under docker: a fresh container", "restart_ray"),
    ("Stop or start this node's Ray", "The agent stays", "stop_start_ray"),
    ("Zoom the focused pane", "Fill the screen with it (z again: back)", "zoom"),
)


def leave_question(agent: AgentInfo) -> str:
    """What to ask before leaving: a host that leaves takes the whole cluster down."""
    if agent.role == "host":
        return (
            f"Stop hosting '{agent.cluster_name}'?\n"
            "This stops Ray on this machine: the whole cluster goes down."
        )
    return f"Leave '{agent.cluster_name}'?\nThis stops Ray and the agent on this node."


def stop_question(agent: AgentInfo) -> str:
    """What to ask before stopping this node's Ray (the head's stops the cluster)."""
    what = "the head: the whole cluster stops" if agent.role == "host" else "Ray"
    return f"Stop this node's {what}?\nThe agent stays; S starts it again."


def lending_toggle(agent: AgentInfo) -> tuple[Request[LendingReply], str]:
    """The pause key's request and what to say when it is done: lend a paused or stopped
    node again, pause one that lends."""
    from ..core.protocol import PauseRequest, ResumeRequest

    if agent.lending.get("state", "") in ("paused", "stopped"):
        return ResumeRequest(), "lent to the cluster again"
    return PauseRequest(), "paused: drained this node's Ray worker; p lends it again"
