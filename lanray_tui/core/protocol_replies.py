"""One dataclass per reply of the control protocol: how each op's ``result`` is read and written.

Each reply reads its ``result`` with ``from_json`` and writes it with ``to_json``. A reply that
does not parse (a KeyError, TypeError or ValueError inside from_json) is one line for the
client: see :func:`.protocol.parse_reply`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .jobs_records import JobView
from .models import AgentInfo, NodeInfo, node_from_status
from .protocol_status import _is_obj


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
    until: str = ""  # ``lend``: "until 18:00", or "" when lending has no end

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.drained is not None:
            out["drained"] = self.drained
        if self.until:
            out["until"] = self.until
        return out

    @classmethod
    def from_json(cls, d: Any) -> LendingReply:
        drained = d.get("drained")
        return cls(
            str(d["state"]),
            bool(drained) if drained is not None else None,
            str(d.get("until") or ""),
        )


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


@dataclass(frozen=True)
class RayNodesReply:
    """Ray's own rows of the cluster's nodes, as the head's Ray lists them (for a worker's
    agent, which cannot reach the head's dashboard: it is on the head's loopback)."""

    nodes: list[NodeInfo]

    def to_json(self) -> list[dict[str, Any]]:
        return [n.to_json() for n in self.nodes]

    @classmethod
    def from_json(cls, d: Any) -> RayNodesReply:
        if not isinstance(d, list):
            raise TypeError("nodes")
        return cls([node_from_status(n) for n in d])


@dataclass(frozen=True)
class CountReply:
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count}

    @classmethod
    def from_json(cls, d: Any) -> CountReply:
        return cls(int(d["count"]))


@dataclass(frozen=True)
class StartReply:
    """The host's start gate: start Ray now (``go``), or wait: ``ahead`` nodes start first."""

    go: bool
    ahead: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"go": self.go, "ahead": self.ahead}

    @classmethod
    def from_json(cls, d: Any) -> StartReply:
        go, ahead = d["go"], d.get("ahead", 0)
        if not isinstance(go, bool) or not isinstance(ahead, int) or isinstance(ahead, bool):
            raise TypeError("go")
        return cls(go, max(0, ahead))


@dataclass(frozen=True)
class HeldReply:
    """Whether the cluster holds something (a job's uploaded package)."""

    held: bool

    def to_json(self) -> dict[str, Any]:
        return {"held": self.held}

    @classmethod
    def from_json(cls, d: Any) -> HeldReply:
        held = d["held"]
        if not isinstance(held, bool):
            raise TypeError("held")
        return cls(held)


@dataclass(frozen=True)
class CertifyReply:
    """A node certificate the host's CA signed, and the CA certificate (PEM)."""

    cert: str
    ca: str

    def to_json(self) -> dict[str, Any]:
        return {"cert": self.cert, "ca": self.ca}

    @classmethod
    def from_json(cls, d: Any) -> CertifyReply:
        cert, ca = d["cert"], d["ca"]
        if not isinstance(cert, str) or not isinstance(ca, str):
            raise TypeError("cert")
        return cls(cert, ca)


@dataclass(frozen=True)
class TunnelReply:
    """The host's yes to a tunnel (``dashboard``): after this line the connection carries
    the bytes of one TCP connection to the head's loopback port ``port``."""

    port: int

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port}

    @classmethod
    def from_json(cls, d: Any) -> TunnelReply:
        return cls(int(d["port"]))


@dataclass(frozen=True)
class ProbeReply:
    """What the host found dialling back a member's ports: ``open`` (it connected),
    ``refused`` (reached, nothing listens), ``timeout`` (dropped on the way: a firewall)
    or ``error: ...``; and the address it dialled."""

    address: str
    ports: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "ports": self.ports}

    @classmethod
    def from_json(cls, d: Any) -> ProbeReply:
        ports = d["ports"]
        if not _is_obj(ports):
            raise TypeError("ports")
        return cls(str(d["address"]), {str(k): str(v) for k, v in ports.items()})


@dataclass(frozen=True)
class MetricsReply:
    """A job's metrics from Ray's result files: each trial's series by metric name, and the
    best trial (``{"trial", "metric", "mode"}``) when a metric says which way is better."""

    trials: dict[str, dict[str, list[float]]]
    best: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"trials": self.trials, "best": self.best}

    @classmethod
    def from_json(cls, d: Any) -> MetricsReply:
        trials = d["trials"]
        if not _is_obj(trials) or not all(_is_obj(s) for s in trials.values()):
            raise TypeError("trials")
        best = d.get("best")
        return cls(
            {
                str(t): {str(k): [float(x) for x in v] for k, v in s.items()}
                for t, s in trials.items()
            },
            {str(k): str(v) for k, v in best.items()} if _is_obj(best) else None,
        )
