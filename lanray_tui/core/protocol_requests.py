"""One dataclass per request of the control protocol: its op name, its fields and their checks.

Each request names the class its reply is read into (``Request[StatusReply]``); the registry
that ties each op to its request and reply is :data:`.protocol.OPS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .jobs_records import JobSpec, JobView
from .models import AgentInfo
from .protocol_checks import (
    DEADLINE,
    WHICH_JOB,
    Check,
    Request,
    flag,
    job_id,
    job_spec,
    number,
    obj,
    text,
    whole,
    wholes,
)
from .protocol_replies import (
    CancelReply,
    CertifyReply,
    CodeReply,
    CountReply,
    HeartbeatReply,
    HeldReply,
    JobLogItem,
    JobsReply,
    LeaveReply,
    LendingReply,
    LogLine,
    MetricsReply,
    ProbeReply,
    RayNodesReply,
    StartReply,
    TokenReply,
    TunnelReply,
    _InfoReply,
    _JobReply,
)


@dataclass(frozen=True)
class InfoRequest(Request[AgentInfo]):
    """This node's agent: who it is, its state and its protocol."""

    OP = "info"
    REPLY = _InfoReply


@dataclass(frozen=True)
class TokenRequest(Request[TokenReply]):
    """The cluster token (host only)."""

    OP = "token"
    REPLY = TokenReply


@dataclass(frozen=True)
class LeaveRequest(Request[LeaveReply]):
    """Stop Ray and the agent; a host's Ray cluster goes with it."""

    OP = "leave"
    REPLY = LeaveReply


@dataclass(frozen=True)
class CodeRequest(Request[CodeReply]):
    """The live join code (host only). ``{}`` is the host screen showing it; ``open`` is the
    owner asking for one (it reopens pairing); ``uses``/``minutes`` issue a new code with
    those limits; ``close`` closes pairing (see :class:`.joincode.CodeBook`)."""

    OP = "code"
    REPLY = CodeReply
    FIELDS: ClassVar[Mapping[str, Check]] = {
        "close": flag,
        "open": flag,
        "uses": whole(1, 1000),
        "minutes": number(1, 24 * 60),
    }

    close: bool = False
    open: bool = False
    uses: int | None = None
    minutes: float | None = None


@dataclass(frozen=True)
class HeartbeatRequest(Request[HeartbeatReply]):
    """A worker's beat, sent to the host's cluster API once per interval."""

    OP = "heartbeat"
    REPLY = HeartbeatReply
    FIELDS: ClassVar[Mapping[str, Check]] = {
        "node_ip": text(64, nonempty=True),
        "name": text(255),
        "state": text(64),
        "lending": obj,
        "resources": obj,
        "runtime": obj,
    }
    REQUIRED: ClassVar[Mapping[str, str]] = {"node_ip": "heartbeat without node_ip"}

    node_ip: str = ""
    name: str = ""  # the host name; empty: the node's address stands for it
    state: str = ""
    lending: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # a Sample's JSON, or {}
    runtime: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PauseRequest(Request[LendingReply]):
    """Withhold this machine: drain Ray (running tasks get ``deadline_s``), then stop it."""

    OP = "pause"
    REPLY = LendingReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"reason": text(300), "deadline_s": DEADLINE}

    reason: str | None = None  # None: "paused by hand"
    deadline_s: int | None = None  # None: the configured drain deadline


@dataclass(frozen=True)
class ResumeRequest(Request[LendingReply]):
    """Lend this machine again (start Ray)."""

    OP = "resume"
    REPLY = LendingReply


@dataclass(frozen=True)
class RestartRayRequest(Request[LendingReply]):
    """Restart this node's Ray now."""

    OP = "restart_ray"
    REPLY = LendingReply


@dataclass(frozen=True)
class StopRayRequest(Request[LendingReply]):
    """Stop this node's Ray and keep the agent until ``resume``."""

    OP = "stop_ray"
    REPLY = LendingReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"deadline_s": DEADLINE}

    deadline_s: int | None = None


@dataclass(frozen=True)
class LogsRequest(Request[LogLine]):
    """Stream a log of this node (``source``: ``ray`` or ``agent``)."""

    OP = "logs"
    REPLY = LogLine
    STREAM = True
    FIELDS: ClassVar[Mapping[str, Check]] = {
        "source": text(32),
        "lines": whole(0, 1_000_000),
        "follow": flag,
    }

    source: str = "ray"
    lines: int = 200  # how many old lines come first
    follow: bool = False


@dataclass(frozen=True)
class SubmitRequest(Request[JobView]):
    """Queue a job."""

    OP = "submit"
    REPLY = _JobReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"spec": job_spec, "submitter": text(256)}
    REQUIRED: ClassVar[Mapping[str, str]] = {"spec": "a job spec must be a JSON object"}

    spec: JobSpec = field(default_factory=JobSpec)
    submitter: str = ""


@dataclass(frozen=True)
class JobsRequest(Request[JobsReply]):
    """The whole queue."""

    OP = "jobs"
    REPLY = JobsReply


@dataclass(frozen=True)
class JobRequest(Request[JobView]):
    """One job, with its spec and the tail of its log."""

    OP = "job"
    REPLY = _JobReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"id": job_id}
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""


@dataclass(frozen=True)
class CancelRequest(Request[CancelReply]):
    OP = "cancel"
    REPLY = CancelReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"id": job_id}
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""


@dataclass(frozen=True)
class RetryRequest(Request[JobView]):
    OP = "retry"
    REPLY = _JobReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"id": job_id}
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""


@dataclass(frozen=True)
class JobLogsRequest(Request[JobLogItem]):
    """Stream a job's log; with ``follow``, until it ends."""

    OP = "job_logs"
    REPLY = JobLogItem
    STREAM = True
    FIELDS: ClassVar[Mapping[str, Check]] = {"id": job_id, "follow": flag}
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""
    follow: bool = False


@dataclass(frozen=True)
class RayNodesRequest(Request[RayNodesReply]):
    """Ray's rows of the cluster's nodes (a worker's agent asks the host)."""

    OP = "ray_nodes"
    REPLY = RayNodesReply


@dataclass(frozen=True)
class RunningTasksRequest(Request[CountReply]):
    """How many tasks run on one Ray node now (a draining worker asks the host)."""

    OP = "running_tasks"
    REPLY = CountReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"node_id": text(64)}
    REQUIRED: ClassVar[Mapping[str, str]] = {"node_id": "running_tasks needs a node_id"}

    node_id: str = ""


@dataclass(frozen=True)
class CertifyRequest(Request[CertifyReply]):
    """A member asks the host's CA for a certificate for its new addresses (over mutual TLS,
    with the certificate it has)."""

    OP = "certify"
    REPLY = CertifyReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"csr": text(4096)}
    REQUIRED: ClassVar[Mapping[str, str]] = {"csr": "certify needs a signing request"}

    csr: str = ""


@dataclass(frozen=True)
class DashboardRequest(Request[TunnelReply]):
    """A tunnel to Ray's dashboard, which listens on the head's loopback only: a member's
    ``lanray-tui dashboard`` opens one per browser connection, over mutual TLS."""

    OP = "dashboard"
    REPLY = TunnelReply


@dataclass(frozen=True)
class ProbeRequest(Request[ProbeReply]):
    """Ask the host to dial back the asking member's address on ``ports`` (the doctor's
    "from the head back to this node" check: Ray needs both ways)."""

    OP = "probe"
    REPLY = ProbeReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"ports": wholes(1, 65535, 256)}
    REQUIRED: ClassVar[Mapping[str, str]] = {"ports": "probe needs the ports to dial"}

    ports: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class LendRequest(Request[LendingReply]):
    """When this joined machine stops lending and leaves: ``until`` a Unix time, 0 never."""

    OP = "lend"
    REPLY = LendingReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"until": number(0, 1e11)}

    until: float = 0.0


@dataclass(frozen=True)
class MetricsRequest(Request[MetricsReply]):
    """A job's metrics from Ray's own result files (``ray.train.report``, ``tune.report``);
    ``metric`` and ``mode`` choose how the best trial is picked."""

    OP = "metrics"
    REPLY = MetricsReply
    FIELDS: ClassVar[Mapping[str, Check]] = {
        "id": job_id,
        "metric": text(80),
        "mode": text(3),
    }
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""
    metric: str = ""
    mode: str = ""


@dataclass(frozen=True)
class PackageRequest(Request[HeldReply]):
    """Whether the cluster still holds an uploaded working_dir (or the host a copy of it):
    ``submit`` then sends its URI without uploading it again."""

    OP = "package"
    REPLY = HeldReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"uri": text(200, nonempty=True)}
    REQUIRED: ClassVar[Mapping[str, str]] = {"uri": "which package? (its gcs:// URI)"}

    uri: str = ""


@dataclass(frozen=True)
class StartRequest(Request[StartReply]):
    """A member asks the host's start gate before it starts Ray (see
    :mod:`..agent.start_gate`): a lab switched on at once starts a few nodes at a time."""

    OP = "start"
    REPLY = StartReply
    FIELDS: ClassVar[Mapping[str, Check]] = {"node_ip": text(64, nonempty=True)}
    REQUIRED: ClassVar[Mapping[str, str]] = {"node_ip": "start needs the node's node_ip"}

    node_ip: str = ""
