"""The typed control protocol: every op round-trips, every malformed request is one line,
the registry's scopes, and the version handshake against a real Unix socket."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.core import cluster_api
from lanray_tui.core import protocol as p
from lanray_tui.core.control import AgentError, ControlClient
from lanray_tui.core.jobs import Job, JobSpec, JobView
from lanray_tui.core.models import PROTOCOL_VERSION, AgentInfo, NodeInfo
from tests.helpers.agent_stub import AGENT, AgentStub, answers

SPEC = JobSpec.from_json({"command": ["python", "-c", "print(1)"], "num_cpus": 0.5})
JOB = Job(id="j-0001", spec=SPEC, state="RUNNING", created=1.0, submitter="me@a", started=2.0)

REQUESTS: list[p.Request[Any]] = [
    p.InfoRequest(),
    p.StatusRequest(),
    p.TokenRequest(),
    p.LeaveRequest(),
    p.CodeRequest(),
    p.HeartbeatRequest(
        node_ip="10.0.0.2",
        name="beta",
        state="ready",
        lending={"state": "lending", "reason": "idle"},
        resources={"cpu_pct": 3.0, "gpus": [{"util": 5, "procs": [{"pid": 1}]}]},
        runtime={"kind": "native"},
    ),
    p.PauseRequest(),
    p.PauseRequest(reason="owner is back", deadline_s=30),
    p.ResumeRequest(),
    p.RestartRayRequest(),
    p.StopRayRequest(deadline_s=0),
    p.LogsRequest(source="agent", lines=0, follow=True),
    p.SubmitRequest(spec=SPEC, submitter="me@alpha"),
    p.JobsRequest(),
    p.JobRequest(id="j-0001"),
    p.CancelRequest(id="j-0001"),
    p.RetryRequest(id="j-0001"),
    p.JobLogsRequest(id="j-0001", follow=True),
    p.RayNodesRequest(),
    p.RunningTasksRequest(node_id="ab12"),
    p.CertifyRequest(csr="-----BEGIN CERTIFICATE REQUEST-----"),
    p.DashboardRequest(),
    p.ProbeRequest(ports=[6379, 10002]),
    p.LendRequest(until=1_800_000_000.0),
    p.MetricsRequest(id="j-0001", metric="mean_loss", mode="min"),
    p.PackageRequest(uri="gcs://_ray_pkg_0123abcd.zip"),
    p.StartRequest(node_ip="10.0.0.2"),
]

REPLIES: dict[str, list[Any]] = {
    "info": [AGENT],
    "status": [
        p.StatusReply(
            nodes=[{"node_id": "n1", "ip": "10.0.0.1", "name": "a", "role": "head"}],
            agent=AGENT,
            free={"free_cpus": 2.0, "free_gpus": 0.0, "free_memory_gb": 1.5},
        ),
        p.StatusReply(nodes=[], agent=AGENT, free=None),
    ],
    "token": [p.TokenReply("s3cret")],
    "leave": [p.LeaveReply(pid=7)],
    "code": [p.CodeReply(code="7-tiger-canvas", expires_in=600, failures_total=1, pairing=True)],
    "heartbeat": [p.HeartbeatReply()],
    "pause": [p.LendingReply("paused", drained=True)],
    "resume": [p.LendingReply("lending")],
    "restart_ray": [p.LendingReply("restarting")],
    "stop_ray": [p.LendingReply("stopped", drained=False)],
    "logs": [p.LogLine("a line")],
    "submit": [JOB.view()],
    "jobs": [p.JobsReply(jobs=[JOB.view()], max_running=2, cluster_ready=False)],
    "job": [JOB.view(detail=True)],
    "cancel": [p.CancelReply(job=JOB.view(), changed=True)],
    "retry": [JOB.view()],
    "job_logs": [p.JobLogItem(line="out"), p.JobLogItem(job=JOB.view())],
    "ray_nodes": [
        p.RayNodesReply([NodeInfo("n1", "10.0.0.1", "a", "head", "ALIVE", 2.0, 0.0, 1.5)]),
        p.RayNodesReply([]),
    ],
    "running_tasks": [p.CountReply(3)],
    "certify": [p.CertifyReply(cert="CERT", ca="CA")],
    "dashboard": [p.TunnelReply(8265)],
    "lend": [p.LendingReply("lending", until="until 18:00")],
    "metrics": [
        p.MetricsReply(
            {"t_0": {"mean_loss": [3.0, 2.0]}},
            {"trial": "t_0", "metric": "mean_loss", "mode": "min"},
        ),
        p.MetricsReply({}),
    ],
    "probe": [p.ProbeReply("10.0.0.2", {"6379": "open", "10002": "timeout"})],
    "package": [p.HeldReply(True), p.HeldReply(False)],
    "start": [p.StartReply(True), p.StartReply(False, ahead=3)],
}


# ----- round trips -------------------------------------------------------------------------


def test_every_op_has_a_request_and_a_reply_here() -> None:
    assert {r.OP for r in REQUESTS} == set(p.OPS) == set(REPLIES)


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: r.OP)
def test_every_request_round_trips(req: p.Request[Any]) -> None:
    doc = req.to_json()
    assert doc["op"] == req.OP
    line = p.encode(doc)
    assert p.parse_request(line) == req
    assert p.parse_request(doc) == req
    assert type(req).from_json(json.loads(line)) == req


@pytest.mark.parametrize("op", sorted(REPLIES))
def test_every_reply_round_trips(op: str) -> None:
    for reply in REPLIES[op]:
        wire = json.loads(p.ok_line(reply))
        assert wire["ok"] is True
        assert p.parse_reply(op, wire["result"]) == reply


def test_job_view_is_what_the_queue_sends() -> None:
    for detail in (False, True):
        sent = JOB.to_json(detail=detail)
        assert JobView.from_json(sent).to_json() == sent
    assert JOB.view().run_time(5.0) == 3.0


def test_the_token_reply_is_the_bare_string_and_cancel_is_flat() -> None:
    assert p.TokenReply("x").to_json() == "x"
    flat = p.CancelReply(job=JOB.view(), changed=False).to_json()
    assert flat["id"] == "j-0001" and flat["changed"] is False
    assert p.LendingReply("lending").to_json() == {"state": "lending"}


def test_absent_optional_fields_take_their_defaults() -> None:
    assert p.parse_request({"op": "logs"}) == p.LogsRequest(source="ray", lines=200, follow=False)
    # null counts as absent, as the untyped agent read it
    assert p.parse_request({"op": "pause", "reason": None}) == p.PauseRequest()
    assert p.parse_request({"op": "job", "id": " j-1 "}) == p.JobRequest(id="j-1")
    assert p.SubmitRequest.of(spec={"command": ["ls"]}).spec.name == "ls"


# ----- malformed requests ------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(depth):
        doc = {"x": doc}
    return doc


MALFORMED: list[tuple[Any, str]] = [
    (b"", "not one JSON line"),
    (b"not json", "not one JSON line"),
    (b"\xff\xfe", "not one JSON line"),
    (b"[1, 2]", "a request is a JSON object, not a list"),
    (b'"info"', "not a string"),
    (b"42", "not a number"),
    (b"null", "not null"),
    ({}, "no 'op'"),
    ({"op": None}, "no 'op'"),
    ({"op": 1}, "'op' must be a string, not a number"),
    ({"op": True}, "'op' must be a string, not true/false"),
    ({"op": ["info"]}, "'op' must be a string, not a list"),
    ({"op": {"name": "info"}}, "'op' must be a string, not an object"),
    ({"op": "nope"}, "'nope' is not available here"),
    ({"op": "x" * 100_000}, "is not available here"),
    ({"op": "info\nstatus"}, "is not available here"),
    ({"op": "info", "extra": 1}, "'info' has no field 'extra'"),
    ({"op": "info", "auth": "secret"}, "'info' has no field 'auth'"),
    ({"op": "running_tasks"}, "running_tasks needs a node_id"),
    ({"op": "certify", "csr": "x" * 5000}, "'csr' is longer than 4096"),
    ({"op": "probe"}, "probe needs the ports to dial"),
    ({"op": "probe", "ports": 80}, "'ports' must be a list, not a number"),
    ({"op": "probe", "ports": [0]}, "'ports' must be between 1 and 65535"),
    ({"op": "probe", "ports": list(range(1, 300))}, "'ports' has more than 256 items"),
    ({"op": "logs", "lines": "5"}, "'lines' must be a whole number, not a string"),
    ({"op": "logs", "lines": True}, "'lines' must be a whole number, not true/false"),
    ({"op": "logs", "lines": 2.5}, "'lines' must be a whole number, not a fraction"),
    ({"op": "logs", "lines": -1}, "'lines' must be between 0 and 1000000"),
    ({"op": "logs", "lines": 10**400}, "'lines' must be between"),
    ({"op": "logs", "follow": "yes"}, "'follow' must be true or false, not a string"),
    ({"op": "logs", "follow": 1}, "'follow' must be true or false"),
    ({"op": "logs", "source": ["ray"]}, "'source' must be a string, not a list"),
    ({"op": "pause", "deadline_s": 1.5}, "'deadline_s' must be a whole number, not a fraction"),
    ({"op": "logs", "source": 7}, "'source' must be a string, not a number"),
    ({"op": "pause", "deadline_s": 10**9}, "'deadline_s' must be between"),
    ({"op": "pause", "reason": "r" * 1_000_000}, "'reason' is longer than 300"),
    ({"op": "pause", "reason": {"a": 1}}, "'reason' must be a string, not an object"),
    ({"op": "stop_ray", "reason": "x"}, "'stop_ray' has no field 'reason'"),
    ({"op": "job"}, "which job?"),
    ({"op": "job", "id": 5}, "which job?"),
    ({"op": "job", "id": "   "}, "which job?"),
    ({"op": "cancel", "id": ["j-1"]}, "which job?"),
    ({"op": "retry", "id": "j" * 10_000}, "which job?"),
    ({"op": "job_logs", "id": "j-1", "follow": "no"}, "'follow' must be true or false"),
    ({"op": "submit"}, "a job spec must be a JSON object"),
    ({"op": "submit", "spec": []}, "a job spec must be a JSON object"),
    ({"op": "submit", "spec": {"command": "ls"}}, "'command' must be a list of strings"),
    ({"op": "submit", "spec": {"command": ["ls"], "x": 1}}, "unknown job spec field 'x'"),
    ({"op": "submit", "spec": {"command": ["ls"]}, "submitter": {}}, "'submitter' must be"),
    ({"op": "heartbeat"}, "heartbeat without node_ip"),
    ({"op": "heartbeat", "node_ip": ""}, "'node_ip' must not be empty"),
    ({"op": "heartbeat", "node_ip": "10.0.0.2", "resources": [1]}, "'resources' must be an obj"),
    ({"op": "heartbeat", "node_ip": "10.0.0.2", "lending": "x"}, "'lending' must be an object"),
    ({"op": "heartbeat", "node_ip": "10.0.0.2", "runtime": _nested(50)}, "nests deeper than 8"),
]


def _ids(case: tuple[Any, str]) -> str:
    return case[1][:40]


@pytest.mark.parametrize("case", MALFORMED, ids=[_ids(c) for c in MALFORMED])
def test_every_malformed_request_is_one_line(case: tuple[Any, str]) -> None:
    doc, says = case
    for form in (doc, p.encode(doc)) if not isinstance(doc, bytes) else (doc,):
        with pytest.raises(p.ProtocolError) as got:
            p.parse_request(form)
        message = str(got.value)
        assert says in message
        assert "\n" not in message and len(message) < 300


def test_deep_json_and_odd_numbers_are_one_line() -> None:
    deep = b'{"op": "info", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    bad_numbers = [
        b'{"op": "pause", "deadline_s": NaN}',
        b'{"op": "pause", "deadline_s": Infinity}',
        b'{"op": "pause", "deadline_s": 1e400}',
    ]
    for line in [deep, *bad_numbers]:
        with pytest.raises(p.ProtocolError) as got:
            p.parse_request(line)
        assert "\n" not in str(got.value)


def test_a_request_built_from_user_input_is_checked_like_the_agent_checks_it() -> None:
    with pytest.raises(p.ProtocolError, match="which job"):
        p.CancelRequest.of(id="")
    with pytest.raises(p.ProtocolError, match="'deadline_s' must be between"):
        p.PauseRequest.of(deadline_s=-5)
    assert p.StopRayRequest.of(deadline_s=None) == p.StopRayRequest()


def test_a_bad_reply_is_one_line() -> None:
    for op, result in [("status", {"nodes": "x"}), ("jobs", {}), ("code", None), ("info", [])]:
        with pytest.raises(p.ProtocolError, match=f"bad reply to '{op}'"):
            p.parse_reply(op, result)


def test_the_heartbeat_book_reads_a_beat_through_the_protocol() -> None:
    book = cluster_api.HeartbeatBook(interval_s=1.0, missed=3)
    beat = {"op": "heartbeat", "node_ip": "10.0.0.2", "lending": {"state": "x"}}
    book.record(beat)
    assert book.beats["10.0.0.2"].name == "10.0.0.2"  # no name: the address stands for it
    book.record(p.HeartbeatRequest(node_ip="10.0.0.3", name="gamma" * 20))
    assert book.beats["10.0.0.3"].name == ("gamma" * 20)[:64]
    with pytest.raises(p.ProtocolError, match="heartbeat without node_ip"):
        book.record({"name": "x"})


# ----- the registry ------------------------------------------------------------------------


def test_the_registry_scopes_match_the_ops_as_the_agent_served_them() -> None:
    member_only = {"ray_nodes", "running_tasks", "certify", "dashboard", "probe", "start"}
    assert (
        frozenset(
            {
                "heartbeat",
                "status",
                "submit",
                "jobs",
                "job",
                "cancel",
                "retry",
                "job_logs",
                "metrics",
                "package",
            }
            | member_only
        )
        == p.REMOTE_OPS
    )
    assert (
        frozenset({"submit", "jobs", "job", "cancel", "retry", "job_logs", "metrics", "package"})
        == p.FORWARDED_OPS
    )
    assert cluster_api.REMOTE_OPS is p.REMOTE_OPS
    assert cluster_api.FORWARDED_OPS is p.FORWARDED_OPS
    assert {"logs", "job_logs"} == p.STREAM_OPS
    assert {"dashboard"} == p.TUNNEL_OPS
    assert {op for op, spec in p.OPS.items() if not spec.local} == member_only
    assert frozenset(p.OPS) - member_only == p.LOCAL_OPS
    assert p.FORWARDED_OPS <= p.REMOTE_OPS
    for op, spec in p.OPS.items():
        assert op == spec.request.OP


# ----- the version handshake, against a real Unix socket ------------------------------------


@pytest.fixture()
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "agent.sock"


def _agent(info: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    return answers(info, leave=p.LeaveReply(pid=info["pid"]), resume=p.LendingReply("lending"))


@pytest.fixture()
def old_agent(sock_path: Path) -> Iterator[AgentStub]:
    old = AGENT.to_json()
    del old["protocol"]  # an agent from before the handshake
    old.update(pid=4321, version="0.0.9")
    agent = AgentStub(sock_path, _agent(old))
    yield agent
    agent.close()


def test_an_old_agent_gets_one_line_that_says_what_to_do(old_agent: AgentStub) -> None:
    client = ControlClient(old_agent.path, timeout=5.0)
    with pytest.raises(p.ProtocolError) as got:
        client.request(p.ResumeRequest())
    assert str(got.value) == (
        f"this lanray-tui speaks protocol {PROTOCOL_VERSION} but the agent (pid 4321, "
        "version 0.0.9) speaks 1: stop it with 'lanray-tui leave' and start it again"
    )
    assert old_agent.seen == ["info"]  # it never sent the op itself
    # what the line says to do works: info and leave talk to any agent
    assert client.info().protocol == 0
    assert client.request(p.LeaveRequest()).pid == 4321
    assert old_agent.seen == ["info", "info", "leave"]


def test_a_newer_agent_is_refused_too(sock_path: Path) -> None:
    newer = {**AGENT.to_json(), "protocol": PROTOCOL_VERSION + 1}
    agent = AgentStub(sock_path, _agent(newer))
    try:
        with pytest.raises(p.ProtocolError, match=f"speaks {PROTOCOL_VERSION + 1}:"):
            list(ControlClient(sock_path).stream(p.LogsRequest()))
    finally:
        agent.close()


def test_an_agent_of_this_version_is_asked_once(sock_path: Path) -> None:
    agent = AgentStub(sock_path, _agent(AGENT.to_json()))
    try:
        client = ControlClient(sock_path, timeout=5.0)
        assert client.request(p.ResumeRequest()) == p.LendingReply("lending")
        assert client.request(p.ResumeRequest()) == p.LendingReply("lending")
        assert agent.seen == ["info", "resume", "resume"]
        assert client.alive()
    finally:
        agent.close()


def test_an_error_reply_is_the_agents_line(sock_path: Path) -> None:
    def answer(req: dict[str, Any]) -> bytes:
        return p.error_line("only joined nodes pause and resume")

    agent = AgentStub(sock_path, answer)
    try:
        with pytest.raises(AgentError, match=r"^only joined nodes pause and resume$"):
            ControlClient(sock_path).request(p.InfoRequest())
    finally:
        agent.close()


def test_agent_info_without_a_protocol_is_protocol_zero() -> None:
    old = AGENT.to_json()
    del old["protocol"]
    assert AgentInfo.from_json(old).protocol == 0
    assert AgentInfo.from_json(AGENT.to_json()).protocol == PROTOCOL_VERSION
    assert p.version_problem(AGENT) == ""
