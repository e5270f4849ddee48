"""What both faces say: the lines the CLI prints and the TUI shows for the same event.

One place, so that the CLI and the TUI never drift apart in how they report a job, a
cancel or a retry, or the start of a host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations only: this module imports nothing
    from .jobs import JobView
    from .models import AgentInfo
    from .protocol import CancelReply, JobsReply

PROG = "lanray-tui"
NO_JOBS = f"no jobs yet: queue one with '{PROG} submit SCRIPT'"
CLUSTER_NOT_READY = "the cluster is not ready: queued jobs wait"
CHECKING_NO_AGENT = "checking that no agent runs on this node"
#: A joined node waiting its turn to start Ray (the host's start gate, core/agent/start_gate.py)
WAITING_TURN = "waiting for the host's go"


def job_notes(got: JobsReply) -> list[str]:
    """What the queue's answer says beside its jobs: why queued jobs wait."""
    notes = []
    if not got.cluster_ready:
        notes.append(CLUSTER_NOT_READY)
    if got.scheduler_error:
        notes.append(f"scheduler: {got.scheduler_error}")
    return notes


def retried(job: JobView) -> str:
    return f"queued {job.id} again (attempt {job.attempt})"


def cancelled(got: CancelReply) -> str:
    """What a cancel did: it cancelled the job, or the job had already ended."""
    if got.changed:
        return f"cancelled {got.job.id}"
    return f"job {got.job.id} already ended ({got.job.state}): nothing to cancel"


def queued(job: JobView) -> str:
    return f"queued '{job.name}' as {job.id}"


def agent_started(pid: int) -> str:
    return f"agent started (pid {pid})"


def cluster_up(info: AgentInfo) -> list[str]:
    """What a host says once its cluster is up."""
    return [
        f"cluster '{info.cluster_name}' is up: head at {info.head_address}",
        f"dashboard (on this machine only, token required): {info.dashboard_url}",
    ]


def join_code(code: str) -> str:
    return f"join code: {code}   (on another machine: {PROG} join --code {code})"


def left(pid: int | None) -> str:
    return f"left the cluster; agent pid {pid} and its Ray have stopped"
