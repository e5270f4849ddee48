"""The control protocol, typed: one dataclass per request and per reply, and one registry.

The framing (:mod:`.framing`, the same on the agent's Unix socket and on the host's cluster
API over TCP): a request is one line ``{"op": NAME, ...fields}``; the reply is one line
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "one line"}``. A streaming op
answers with many ``ok`` lines and ends with ``{"end": true}``. No request carries a secret:
the cluster API runs over mutual TLS, and the client's certificate says who asks.

The agent reads a request with :func:`parse_request` (which validates every field and raises
:class:`ProtocolError` with one line), answers with :func:`ok_line`, :func:`error_line` and
:data:`END_LINE`, and finds where an op is served in :data:`OPS`. The faces send request
objects through :class:`~lanray_tui.core.control.ControlClient`, which reads each reply into
its class. ``info`` carries :data:`PROTOCOL_VERSION`, so a client and an agent of different
protocols notice each other (:func:`check_version`).

The pieces, each re-exported here (``from lanray_tui.core.protocol import X`` and
``protocol.X`` work for all of them):

- :mod:`.framing`: a line on the wire (:func:`encode`, :func:`ok_line`, :class:`ProtocolError`);
- :mod:`.protocol_checks`: the field checks and the :class:`Request` base;
- :mod:`.protocol_requests`: one dataclass per request;
- :mod:`.protocol_replies`: one dataclass per reply;
- this module: the registry :data:`OPS`, :func:`parse_request`, :func:`parse_reply` and the
  version handshake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .framing import END_LINE, MAX_LINE, ProtocolError, encode, error_line, ok_line
from .models import PROTOCOL_VERSION, AgentInfo
from .protocol_checks import (
    DEADLINE,
    MAX_DEPTH,
    MAX_OP_SHOWN,
    MAX_TEXT,
    WHICH_JOB,
    Check,
    Request,
    _kind,
    _short,
    flag,
    job_id,
    job_spec,
    number,
    obj,
    text,
    whole,
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
)
from .protocol_requests import (
    CancelRequest,
    CertifyRequest,
    CodeRequest,
    DashboardRequest,
    HeartbeatRequest,
    InfoRequest,
    JobLogsRequest,
    JobRequest,
    JobsRequest,
    LeaveRequest,
    LendRequest,
    LogsRequest,
    MetricsRequest,
    PackageRequest,
    PauseRequest,
    ProbeRequest,
    RayNodesRequest,
    RestartRayRequest,
    ResumeRequest,
    RetryRequest,
    RunningTasksRequest,
    StartRequest,
    StopRayRequest,
    SubmitRequest,
    TokenRequest,
)
from .protocol_status import StatusReply, StatusRequest

__all__ = [
    "DEADLINE",
    "END_LINE",
    "FORWARDED_OPS",
    "LOCAL_OPS",
    "MAX_DEPTH",
    "MAX_LINE",
    "MAX_OP_SHOWN",
    "MAX_TEXT",
    "OPS",
    "PROTOCOL_VERSION",
    "REMOTE_OPS",
    "STREAM_OPS",
    "TUNNEL_OPS",
    "WHICH_JOB",
    "CancelReply",
    "CancelRequest",
    "CertifyReply",
    "CertifyRequest",
    "Check",
    "CodeReply",
    "CodeRequest",
    "CountReply",
    "DashboardRequest",
    "HeartbeatReply",
    "HeartbeatRequest",
    "HeldReply",
    "InfoRequest",
    "JobLogItem",
    "JobLogsRequest",
    "JobRequest",
    "JobsReply",
    "JobsRequest",
    "LeaveReply",
    "LeaveRequest",
    "LendRequest",
    "LendingReply",
    "LogLine",
    "LogsRequest",
    "MetricsReply",
    "MetricsRequest",
    "OpSpec",
    "PackageRequest",
    "PauseRequest",
    "ProbeReply",
    "ProbeRequest",
    "ProtocolError",
    "RayNodesReply",
    "RayNodesRequest",
    "Request",
    "RestartRayRequest",
    "ResumeRequest",
    "RetryRequest",
    "RunningTasksRequest",
    "StartReply",
    "StartRequest",
    "StatusReply",
    "StatusRequest",
    "StopRayRequest",
    "SubmitRequest",
    "TokenReply",
    "TokenRequest",
    "TunnelReply",
    "check_version",
    "encode",
    "error_line",
    "flag",
    "job_id",
    "job_spec",
    "number",
    "obj",
    "ok_line",
    "parse_reply",
    "parse_request",
    "text",
    "version_problem",
    "whole",
]


# ----- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    """One op: its request and reply classes (the reply of each item, for a stream), and
    where it is served.

    ``local``: on the agent's Unix socket; ``remote``: on the host's cluster API too (for
    a member with the cluster's certificate); ``forwarded``: a worker's agent hands it to
    the host; ``stream``: many replies, then ``{"end": true}``; ``tunnel``: one reply,
    then the bytes of one TCP connection both ways.
    """

    request: type[Request[Any]]
    local: bool = True
    remote: bool = False
    forwarded: bool = False
    tunnel: bool = False  # after its reply, the connection carries raw bytes

    @property
    def reply(self) -> Any:
        """A class with from_json (AgentInfo, JobView: their own records): the request's."""
        return self.request.REPLY

    @property
    def stream(self) -> bool:
        return self.request.STREAM


OPS: dict[str, OpSpec] = {
    spec.request.OP: spec
    for spec in (
        OpSpec(InfoRequest),
        OpSpec(StatusRequest, remote=True),
        OpSpec(TokenRequest),
        OpSpec(LeaveRequest),
        OpSpec(CodeRequest),
        OpSpec(HeartbeatRequest, remote=True),
        OpSpec(PauseRequest),
        OpSpec(ResumeRequest),
        OpSpec(RestartRayRequest),
        OpSpec(StopRayRequest),
        OpSpec(LendRequest),
        OpSpec(LogsRequest),
        OpSpec(SubmitRequest, remote=True, forwarded=True),
        OpSpec(JobsRequest, remote=True, forwarded=True),
        OpSpec(JobRequest, remote=True, forwarded=True),
        OpSpec(CancelRequest, remote=True, forwarded=True),
        OpSpec(RetryRequest, remote=True, forwarded=True),
        OpSpec(JobLogsRequest, remote=True, forwarded=True),
        OpSpec(MetricsRequest, remote=True, forwarded=True),
        OpSpec(PackageRequest, remote=True, forwarded=True),
        OpSpec(RayNodesRequest, local=False, remote=True),
        OpSpec(RunningTasksRequest, local=False, remote=True),
        OpSpec(CertifyRequest, local=False, remote=True),
        OpSpec(DashboardRequest, local=False, remote=True, tunnel=True),
        OpSpec(ProbeRequest, local=False, remote=True),
        OpSpec(StartRequest, local=False, remote=True),
    )
}

LOCAL_OPS = frozenset(op for op, spec in OPS.items() if spec.local)
REMOTE_OPS = frozenset(op for op, spec in OPS.items() if spec.remote)
FORWARDED_OPS = frozenset(op for op, spec in OPS.items() if spec.forwarded)
STREAM_OPS = frozenset(op for op, spec in OPS.items() if spec.stream)
TUNNEL_OPS = frozenset(op for op, spec in OPS.items() if spec.tunnel)


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
    spec = OPS.get(op)
    if spec is None:
        raise ProtocolError(f"the agent sent a bad reply to '{_short(op)}'")
    return spec.request.read_reply(result)


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
