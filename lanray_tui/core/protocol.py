"""The control protocol, typed: one dataclass per request and per reply, and one registry.

The framing (:mod:`.framing`, the same on the agent's Unix socket and on the host's cluster
API over TCP): a request is one line ``{"op": NAME, ...fields}``; the reply is one line
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "one line"}``. A streaming op
answers with many ``ok`` lines and ends with ``{"end": true}``. On the cluster API every
request also carries the cluster token as ``"auth"``.

The agent reads a request with :func:`parse_request` (which validates every field and raises
:class:`ProtocolError` with one line), answers with :func:`ok_line`, :func:`error_line` and
:data:`END_LINE`, and finds where an op is served in :data:`OPS`. The faces send request
objects through :class:`~lanray_tui.core.control.ControlClient`, which reads each reply into
its class. ``info`` carries :data:`PROTOCOL_VERSION`, so a client and an agent of different
protocols notice each other (:func:`check_version`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Generic, TypeVar

from .errors import LanrayError
from .framing import END_LINE, MAX_LINE, ProtocolError, encode, error_line, ok_line
from .jobs import JobError, JobSpec, JobView
from .models import PROTOCOL_VERSION, AgentInfo, NodeInfo, node_from_status

__all__ = [
    "END_LINE",
    "MAX_LINE",
    "OPS",
    "PROTOCOL_VERSION",
    "OpSpec",
    "ProtocolError",
    "encode",
    "error_line",
    "ok_line",
    "parse_request",
]

MAX_DEPTH = 8  # how deep the objects inside a request may nest (a GPU's processes: 4)
MAX_TEXT = 1000  # the longest free-text field of a request
MAX_OP_SHOWN = 40  # how much of a bad op name an error repeats

WHICH_JOB = "which job? (give its id, as 'lanray-tui jobs' lists them)"


# ----- checking fields ---------------------------------------------------------------------

Check = Callable[[str, str, Any], Any]  # (op, field, value) -> the value to keep


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)[:MAX_OP_SHOWN]
    text = " ".join(text.split())
    return text if len(text) <= MAX_OP_SHOWN else text[: MAX_OP_SHOWN - 1] + "…"


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    kinds.update({float: "a fraction", int: "a number", type(None): "null"})
    return kinds.get(type(value), type(value).__name__)


def text(max_len: int = MAX_TEXT, *, nonempty: bool = False) -> Check:
    def check(op: str, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ProtocolError(f"'{op}': '{name}' must be a string, not {_kind(value)}")
        if len(value) > max_len:
            raise ProtocolError(f"'{op}': '{name}' is longer than {max_len} characters")
        if nonempty and not value.strip():
            raise ProtocolError(f"'{op}': '{name}' must not be empty")
        return value

    return check


def whole(lo: int, hi: int) -> Check:
    def check(op: str, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"'{op}': '{name}' must be a whole number, not {_kind(value)}")
        if not lo <= value <= hi:
            raise ProtocolError(f"'{op}': '{name}' must be between {lo} and {hi}")
        return value

    return check


def number(lo: float, hi: float) -> Check:
    def check(op: str, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"'{op}': '{name}' must be a number, not {_kind(value)}")
        if not lo <= value <= hi:
            raise ProtocolError(f"'{op}': '{name}' must be between {lo:g} and {hi:g}")
        return float(value)

    return check


def flag(op: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"'{op}': '{name}' must be true or false, not {_kind(value)}")
    return value


def obj(op: str, name: str, value: Any) -> dict[str, Any]:
    """A JSON object of plain values, nested at most :data:`MAX_DEPTH` deep."""
    if not isinstance(value, dict):
        raise ProtocolError(f"'{op}': '{name}' must be an object, not {_kind(value)}")
    if _depth(value) > MAX_DEPTH:
        raise ProtocolError(f"'{op}': '{name}' nests deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """How deep lists and objects nest in ``value`` (without recursion: any depth is safe)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        todo.extend((c, level + 1) for c in children)
    return deepest


def job_id(op: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise ProtocolError(WHICH_JOB)
    return value.strip()


def job_spec(op: str, name: str, value: Any) -> JobSpec:
    try:
        return JobSpec.from_json(value)
    except JobError as exc:
        raise ProtocolError(str(exc)) from None


# ----- requests ----------------------------------------------------------------------------

T = TypeVar("T")  # what the request's reply (or each item of its stream) is read into
R = TypeVar("R", bound="Request[Any]")


@dataclass(frozen=True)
class Request(Generic[T]):
    """A request: its op name is ``OP``; ``FIELDS`` checks each field it may carry;
    ``REQUIRED`` names those it must. ``auth`` (the cluster token) rides on the cluster API."""

    OP: ClassVar[str] = ""
    FIELDS: ClassVar[Mapping[str, Check]] = {}
    REQUIRED: ClassVar[Mapping[str, str]] = {}  # field -> the error when it is missing

    auth: str = field(default="", kw_only=True, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.OP}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "auth" and not value:
                continue
            if value is not None:
                out[f.name] = value.to_json() if hasattr(value, "to_json") else value
        return out

    def with_auth(self: R, token: str) -> R:
        """The same request, carrying the cluster token (to send it to the host)."""
        return replace(self, auth=token)

    @classmethod
    def of(cls: type[R], **values: Any) -> R:
        """The request made of plain values (what a user typed), checked like the agent
        checks it: :class:`ProtocolError` with the agent's own line for a bad one."""
        return cls.from_json({**values, "op": cls.OP})

    @classmethod
    def from_json(cls: type[R], doc: Any) -> R:
        """Validate ``doc`` as this request; raise :class:`ProtocolError` (one line) if not."""
        if not isinstance(doc, Mapping):
            raise ProtocolError(f"bad request: '{cls.OP}' must be a JSON object")
        if doc.get("op") != cls.OP:
            raise ProtocolError(f"bad request: this is not '{cls.OP}'")
        unknown = sorted(k for k in doc if k not in cls.FIELDS and k not in ("op", "auth"))
        if unknown:
            raise ProtocolError(f"'{cls.OP}' has no field '{_short(unknown[0])}'")
        args: dict[str, Any] = {}
        for name, check in cls.FIELDS.items():
            value = doc.get(name)
            if value is None:  # absent (or null): the default, unless it is required
                if name in cls.REQUIRED:
                    raise ProtocolError(cls.REQUIRED[name])
                continue
            args[name] = check(cls.OP, name, value)
        if doc.get("auth") is not None:
            args["auth"] = text(256)(cls.OP, "auth", doc["auth"])
        return cls(**args)


@dataclass(frozen=True)
class InfoRequest(Request["AgentInfo"]):
    """This node's agent: who it is, its state and its protocol."""

    OP = "info"


@dataclass(frozen=True)
class StatusRequest(Request["StatusReply"]):
    """The cluster's nodes with their links, lending and resources."""

    OP = "status"


@dataclass(frozen=True)
class TokenRequest(Request["TokenReply"]):
    """The cluster token (host only)."""

    OP = "token"


@dataclass(frozen=True)
class LeaveRequest(Request["LeaveReply"]):
    """Stop Ray and the agent; a host's Ray cluster goes with it."""

    OP = "leave"


@dataclass(frozen=True)
class CodeRequest(Request["CodeReply"]):
    """The live join code (host only). ``{}`` is the host screen showing it; ``open`` is the
    owner asking for one (it reopens pairing); ``uses``/``minutes`` issue a new code with
    those limits; ``close`` closes pairing (see :class:`.joincode.CodeBook`)."""

    OP = "code"
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
class HeartbeatRequest(Request["HeartbeatReply"]):
    """A worker's beat, sent to the host's cluster API once per interval."""

    OP = "heartbeat"
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


DEADLINE = whole(0, 7 * 86400)


@dataclass(frozen=True)
class PauseRequest(Request["LendingReply"]):
    """Withhold this machine: drain Ray (running tasks get ``deadline_s``), then stop it."""

    OP = "pause"
    FIELDS: ClassVar[Mapping[str, Check]] = {"reason": text(300), "deadline_s": DEADLINE}

    reason: str | None = None  # None: "paused by hand"
    deadline_s: int | None = None  # None: the configured drain deadline


@dataclass(frozen=True)
class ResumeRequest(Request["LendingReply"]):
    """Lend this machine again (start Ray)."""

    OP = "resume"


@dataclass(frozen=True)
class RestartRayRequest(Request["LendingReply"]):
    """Restart this node's Ray now."""

    OP = "restart_ray"


@dataclass(frozen=True)
class StopRayRequest(Request["LendingReply"]):
    """Stop this node's Ray and keep the agent until ``resume``."""

    OP = "stop_ray"
    FIELDS: ClassVar[Mapping[str, Check]] = {"deadline_s": DEADLINE}

    deadline_s: int | None = None


@dataclass(frozen=True)
class LogsRequest(Request["LogLine"]):
    """Stream a log of this node (``source``: ``ray`` or ``agent``)."""

    OP = "logs"
    FIELDS: ClassVar[Mapping[str, Check]] = {
        "source": text(32),
        "lines": whole(0, 1_000_000),
        "follow": flag,
    }

    source: str = "ray"
    lines: int = 200  # how many old lines come first
    follow: bool = False


@dataclass(frozen=True)
class SubmitRequest(Request["JobView"]):
    """Queue a job."""

    OP = "submit"
    FIELDS: ClassVar[Mapping[str, Check]] = {"spec": job_spec, "submitter": text(256)}
    REQUIRED: ClassVar[Mapping[str, str]] = {"spec": "a job spec must be a JSON object"}

    spec: JobSpec = field(default_factory=JobSpec)
    submitter: str = ""


@dataclass(frozen=True)
class JobsRequest(Request["JobsReply"]):
    """The whole queue."""

    OP = "jobs"


@dataclass(frozen=True)
class JobRequest(Request["JobView"]):
    """One job, with its spec and the tail of its log."""

    OP = "job"
    FIELDS: ClassVar[Mapping[str, Check]] = {"id": job_id}
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""


@dataclass(frozen=True)
class CancelRequest(Request["CancelReply"]):
    OP = "cancel"
    FIELDS: ClassVar[Mapping[str, Check]] = {"id": job_id}
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""


@dataclass(frozen=True)
class RetryRequest(Request["JobView"]):
    OP = "retry"
    FIELDS: ClassVar[Mapping[str, Check]] = {"id": job_id}
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""


@dataclass(frozen=True)
class JobLogsRequest(Request["JobLogItem"]):
    """Stream a job's log; with ``follow``, until it ends."""

    OP = "job_logs"
    FIELDS: ClassVar[Mapping[str, Check]] = {"id": job_id, "follow": flag}
    REQUIRED: ClassVar[Mapping[str, str]] = {"id": WHICH_JOB}

    id: str = ""
    follow: bool = False


# ----- replies -----------------------------------------------------------------------------
#
# Each reply reads its ``result`` with ``from_json`` and writes it with ``to_json``. A reply
# that does not parse (a KeyError, TypeError or ValueError inside from_json) is one line for
# the client: see :func:`parse_reply`.


@dataclass(frozen=True)
class StatusReply:
    """The nodes (as the agent serves them: Ray's row plus heartbeats), this agent, and what
    Ray has not handed out (the host's summary, or None)."""

    nodes: list[dict[str, Any]]
    agent: AgentInfo
    free: dict[str, float] | None = None
    pairing: dict[str, Any] | None = None  # the host's CodeReply JSON (failed attempts...)
    note: str = ""  # why ``nodes`` is empty: Ray's view is not available (Ray restarting...)

    def node_infos(self) -> list[NodeInfo]:
        return [node_from_status(n) for n in self.nodes]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "nodes": self.nodes,
            "agent": self.agent.to_json(),
            "free": self.free,
        }
        if self.pairing is not None:
            out["pairing"] = self.pairing
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_json(cls, d: Any) -> StatusReply:
        nodes = d["nodes"]
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise TypeError("nodes")
        free, pairing = d.get("free"), d.get("pairing")
        return cls(
            list(nodes),
            AgentInfo.from_json(d["agent"]),
            free if _is_obj(free) else None,
            pairing if _is_obj(pairing) else None,
            str(d.get("note") or ""),
        )


@dataclass(frozen=True)
class TokenReply:
    token: str

    def to_json(self) -> str:
        return self.token  # the bare string

    @classmethod
    def from_json(cls, d: Any) -> TokenReply:
        if not isinstance(d, str):
            raise TypeError("token")
        return cls(d)


@dataclass(frozen=True)
class LeaveReply:
    pid: int

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid}

    @classmethod
    def from_json(cls, d: Any) -> LeaveReply:
        return cls(int(d["pid"]))


@dataclass(frozen=True)
class CodeReply:
    """The pairing state: the live code ("" when none is), and failed attempts by source."""

    code: str
    expires_in: int  # seconds
    failures_total: int = 0  # wrong codes tried so far
    pairing: bool = False  # whether the pairing service runs
    state: str = ""  # "live" | "idle" | "closed" | "locked"
    uses_left: int = 0
    retry_in: int = 0  # seconds until pairing reopens after a backoff
    pairing_failures: list[dict[str, Any]] = field(default_factory=list)
    pairing_summary: str = ""  # "3 failed pairing attempts from 10.0.0.9"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> CodeReply:
        failures = d.get("pairing_failures")
        return cls(
            str(d["code"]),
            int(d.get("expires_in", 0)),
            int(d.get("failures_total", 0)),
            bool(d.get("pairing", False)),
            str(d.get("state", "")),
            int(d.get("uses_left", 0)),
            int(d.get("retry_in", 0)),
            [f for f in failures if isinstance(f, dict)] if isinstance(failures, list) else [],
            str(d.get("pairing_summary", "")),
        )


@dataclass(frozen=True)
class HeartbeatReply:
    def to_json(self) -> dict[str, Any]:
        return {"ok": True}

    @classmethod
    def from_json(cls, d: Any) -> HeartbeatReply:
        if not isinstance(d, dict):
            raise TypeError("heartbeat")
        return cls()


@dataclass(frozen=True)
class LendingReply:
    """What ``pause``, ``resume``, ``restart_ray`` and ``stop_ray`` leave behind: the lending
    state, and for the ops that drain, whether Ray drained (None: the op does not drain)."""

    state: str
    drained: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.drained is not None:
            out["drained"] = self.drained
        return out

    @classmethod
    def from_json(cls, d: Any) -> LendingReply:
        drained = d.get("drained")
        return cls(str(d["state"]), bool(drained) if drained is not None else None)


@dataclass(frozen=True)
class LogLine:
    """One item of ``logs``."""

    line: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line}

    @classmethod
    def from_json(cls, d: Any) -> LogLine:
        return cls(str(d["line"]))


@dataclass(frozen=True)
class JobsReply:
    jobs: list[JobView]
    max_running: int = 0
    cluster_ready: bool = True
    scheduler_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": [j.to_json() for j in self.jobs],
            "max_running": self.max_running,
            "cluster_ready": self.cluster_ready,
            "scheduler_error": self.scheduler_error,
        }

    @classmethod
    def from_json(cls, d: Any) -> JobsReply:
        return cls(
            [JobView.from_json(j) for j in d["jobs"]],
            int(d.get("max_running") or 0),
            bool(d.get("cluster_ready", True)),
            str(d.get("scheduler_error") or ""),
        )


@dataclass(frozen=True)
class CancelReply:
    """The job after ``cancel``; ``changed``: whether this call cancelled it."""

    job: JobView
    changed: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.job.to_json(), "changed": self.changed}

    @classmethod
    def from_json(cls, d: Any) -> CancelReply:
        return cls(
            JobView.from_json({k: v for k, v in d.items() if k != "changed"}), bool(d["changed"])
        )


@dataclass(frozen=True)
class JobLogItem:
    """One item of ``job_logs``: a log line, or the job's state (first, last and on each
    change)."""

    line: str | None = None
    job: JobView | None = None

    def to_json(self) -> dict[str, Any]:
        if self.job is not None:
            return {"job": self.job.to_json()}
        return {"line": self.line or ""}

    @classmethod
    def from_json(cls, d: Any) -> JobLogItem:
        if "job" in d:
            return cls(job=JobView.from_json(d["job"]))
        return cls(line=str(d["line"]))


def _is_obj(value: Any) -> bool:
    return isinstance(value, dict)


class _JobReply:
    """``submit``, ``job`` and ``retry`` answer with the job itself."""

    @staticmethod
    def from_json(d: Any) -> JobView:
        return JobView.from_json(d)


class _InfoReply:
    @staticmethod
    def from_json(d: Any) -> AgentInfo:
        if not isinstance(d, dict):
            raise TypeError("info")
        return AgentInfo.from_json(d)


# ----- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    """One op: its request and reply classes (the reply of each item, for a stream), and
    where it is served.

    ``local``: on the agent's Unix socket; ``remote``: on the host's cluster API too (with
    the token); ``forwarded``: a worker's agent hands it to the host; ``stream``: many
    replies, then ``{"end": true}``.
    """

    request: type[Request[Any]]
    reply: Any  # a class with from_json (AgentInfo, JobView: their own records)
    local: bool = True
    remote: bool = False
    forwarded: bool = False
    stream: bool = False


OPS: dict[str, OpSpec] = {
    spec.request.OP: spec
    for spec in (
        OpSpec(InfoRequest, _InfoReply),
        OpSpec(StatusRequest, StatusReply, remote=True),
        OpSpec(TokenRequest, TokenReply),
        OpSpec(LeaveRequest, LeaveReply),
        OpSpec(CodeRequest, CodeReply),
        OpSpec(HeartbeatRequest, HeartbeatReply, remote=True),
        OpSpec(PauseRequest, LendingReply),
        OpSpec(ResumeRequest, LendingReply),
        OpSpec(RestartRayRequest, LendingReply),
        OpSpec(StopRayRequest, LendingReply),
        OpSpec(LogsRequest, LogLine, stream=True),
        OpSpec(SubmitRequest, _JobReply, remote=True, forwarded=True),
        OpSpec(JobsRequest, JobsReply, remote=True, forwarded=True),
        OpSpec(JobRequest, _JobReply, remote=True, forwarded=True),
        OpSpec(CancelRequest, CancelReply, remote=True, forwarded=True),
        OpSpec(RetryRequest, _JobReply, remote=True, forwarded=True),
        OpSpec(JobLogsRequest, JobLogItem, remote=True, forwarded=True, stream=True),
    )
}

REMOTE_OPS = frozenset(op for op, spec in OPS.items() if spec.remote)
FORWARDED_OPS = frozenset(op for op, spec in OPS.items() if spec.forwarded)
STREAM_OPS = frozenset(op for op, spec in OPS.items() if spec.stream)


def parse_request(line: bytes | str | Mapping[str, Any]) -> Request[Any]:
    """The request in one protocol line (or its decoded object), validated.

    Raises :class:`ProtocolError` with one line for anything else: not JSON, not an object,
    no op or an op that is not a string, an unknown op (``'x' is not available here``), a
    field of the wrong type or out of range, objects nested too deep.
    """
    if isinstance(line, (bytes, str)):
        try:
            doc: Any = json.loads(line)
        except RecursionError:
            raise ProtocolError(f"bad request: nested deeper than {MAX_DEPTH} levels") from None
        except ValueError:
            raise ProtocolError("bad request: not one JSON line") from None
    else:
        doc = line
    if not isinstance(doc, Mapping):
        raise ProtocolError(f"bad request: a request is a JSON object, not {_kind(doc)}")
    op = doc.get("op")
    if op is None:
        raise ProtocolError("bad request: no 'op'")
    if not isinstance(op, str):
        raise ProtocolError(f"bad request: 'op' must be a string, not {_kind(op)}")
    spec = OPS.get(op)
    if spec is None:
        raise ProtocolError(f"'{_short(op)}' is not available here")
    return spec.request.from_json(doc)


def parse_reply(op: str, result: Any) -> Any:
    """The ``result`` of an ``ok`` reply to ``op`` (or of one stream item) as its class."""
    try:
        return OPS[op].reply.from_json(result)
    except (LanrayError, KeyError, TypeError, ValueError, AttributeError):
        raise ProtocolError(f"the agent sent a bad reply to '{op}'") from None


def version_problem(info: AgentInfo) -> str:
    """Why this client cannot talk to the agent ``info`` describes ("" when it can)."""
    if info.protocol == PROTOCOL_VERSION:
        return ""
    theirs = info.protocol or 1  # an agent from before the handshake speaks 1
    return (
        f"this lanray-tui speaks protocol {PROTOCOL_VERSION} but the agent "
        f"(pid {info.pid}, version {info.version}) speaks {theirs}: "
        "stop it with 'lanray-tui leave' and start it again"
    )


def check_version(info: AgentInfo) -> AgentInfo:
    """``info``, or :class:`ProtocolError` when the agent speaks another protocol."""
    problem = version_problem(info)
    if problem:
        raise ProtocolError(problem)
    return info
