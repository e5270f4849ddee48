"""What a job is: its states, the spec of what to run, the job as stored and as the faces see it.

States::

    QUEUED -> SUBMITTED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED | LOST

:class:`JobSpec` is what to run (checked field by field by its ``from_json``), :class:`Job` one
job as :class:`~.jobs_queue.JobQueue` keeps it, and :class:`JobView` the job as it crosses the
control socket (the one reader every face uses). :mod:`.jobs` re-exports all of it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from .errors import LanrayError

QUEUED = "QUEUED"
SUBMITTED = "SUBMITTED"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
LOST = "LOST"

STATES = (QUEUED, SUBMITTED, RUNNING, SUCCEEDED, FAILED, CANCELLED, LOST)
ACTIVE = frozenset({SUBMITTED, RUNNING})  # in Ray: they hold a slot
FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, LOST})
RETRYABLE = frozenset({FAILED, LOST, CANCELLED})

MAX_NAME = 64
MAX_PRIORITY = 1000
LOG_TAIL_LINES = 100


class JobError(LanrayError):
    """A job request that cannot be done, with the reason in one line."""


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class JobSpec:
    """What to run. Exactly one of ``script`` (a path inside ``working_dir``, run with
    ``python``) and ``command`` (an argv) is set; ``args`` follow either."""

    script: str = ""
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    working_dir: str = ""  # a URI Ray can fetch (gcs://..., https://...zip) or empty
    num_cpus: float | None = None  # resources reserved for the driver (the entrypoint)
    num_gpus: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    name: str = ""
    priority: int = 0
    max_time_s: float | None = None  # how long it may run, as its submitter declares

    @classmethod
    def from_json(cls, doc: Any) -> JobSpec:
        """Validate a spec from the control API; raise :class:`JobError` with the reason."""
        if not isinstance(doc, Mapping):
            raise JobError("a job spec must be a JSON object")
        unknown = sorted(set(doc) - set(cls.__dataclass_fields__))
        if unknown:
            raise JobError(f"unknown job spec field '{unknown[0]}'")
        script, command, args = _program(doc)
        spec = cls(
            script=script,
            command=command,
            args=args,
            working_dir=_working_dir(doc, script),
            num_cpus=_resource(doc.get("num_cpus"), "num_cpus"),
            num_gpus=_resource(doc.get("num_gpus"), "num_gpus"),
            env=_env(doc.get("env", {}) or {}),
            name=_name(doc.get("name", "") or ""),
            priority=_priority(doc.get("priority", 0)),
            max_time_s=_max_time(doc.get("max_time_s")),
        )
        return spec if spec.name else replace(spec, name=spec.default_name())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def default_name(self) -> str:
        """The script's file name; for ``python x.py ...`` the name of ``x.py``."""
        first = self.script or (self.command[0] if self.command else "job")
        cmd = self.command
        if (
            not self.script
            and len(cmd) > 1
            and PurePosixPath(cmd[0]).name.startswith("python")
            and not cmd[1].startswith("-")
        ):
            first = cmd[1]
        return _one_line(PurePosixPath(first).name or first, MAX_NAME)

    def entrypoint(self, python: str = "python") -> str:
        """The shell command Ray runs for this job."""
        argv = [python, self.script] if self.script else list(self.command)
        return shlex.join([*argv, *self.args])


MAX_TIME_S = 30 * 86400


def _max_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JobError("max_time_s must be a number of seconds")
    if not 0 < value <= MAX_TIME_S:
        raise JobError(f"max_time_s must be between 0 and {MAX_TIME_S}")
    return float(value)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _program(doc: Mapping[str, Any]) -> tuple[str, list[str], list[str]]:
    """The spec's ``script``, ``command`` and ``args``: exactly one of the first two."""
    script = doc.get("script", "") or ""
    command = doc.get("command", []) or []
    args = doc.get("args", []) or []
    if not isinstance(script, str):
        raise JobError("'script' must be a path")
    if not _str_list(command):
        raise JobError("'command' must be a list of strings")
    if not _str_list(args):
        raise JobError("'args' must be a list of strings")
    if bool(script) == bool(command):
        raise JobError("a job needs either a script or a command (not both)")
    if script:
        p = PurePosixPath(script)
        if p.is_absolute() or ".." in p.parts:
            raise JobError(f"script '{script}' must be a path inside the working_dir")
    return script, list(command), list(args)


def _working_dir(doc: Mapping[str, Any], script: str) -> str:
    working_dir = doc.get("working_dir", "") or ""
    if not isinstance(working_dir, str):
        raise JobError("'working_dir' must be a URI")
    if working_dir and "://" not in working_dir:
        raise JobError(
            f"working_dir '{working_dir}' is a local path: upload it first "
            "('lanray-tui submit' does)"
        )
    if script and not working_dir:
        raise JobError("a script job needs the working_dir that holds the script")
    return working_dir


def _env(env: Any) -> dict[str, str]:
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in env.items()
    ):
        raise JobError("'env' must map variable names to strings")
    for k in env:
        if not (k[0].isalpha() or k[0] == "_") or not all(c.isalnum() or c == "_" for c in k):
            raise JobError(f"'{k}' is not an environment variable name")
    return dict(env)


def _name(name: Any) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise JobError(f"a job name must be a string of at most {MAX_NAME} characters")
    return _one_line(name, MAX_NAME)


def _priority(priority: Any) -> int:
    if priority is None:
        return 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise JobError("'priority' must be a whole number")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise JobError(f"'priority' must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    return priority


def _resource(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JobError(f"'{name}' must be a number")
    if not 0 <= value <= 4096:
        raise JobError(f"'{name}' must be between 0 and 4096")
    return float(value)


@dataclass(frozen=True)
class Job:
    """One job in the queue, as stored."""

    id: str
    spec: JobSpec
    state: str
    created: float
    submitter: str = ""
    started: float | None = None  # when Ray first reported it RUNNING
    ended: float | None = None
    exit_code: int | None = None
    message: str = ""  # one line: why it ended, or why it waits
    ray_id: str = ""  # the Ray submission id of the current attempt
    attempt: int = 1
    submitted: float | None = None  # when it was handed to Ray (this attempt)
    log_tail: str = ""  # the last lines of its log, kept when it ended
    node: str = ""  # where its driver runs: the address, or a Ray node id (once Ray says)

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self, detail: bool = False) -> dict[str, Any]:
        """The job for the control API and ``jobs --json``; ``detail`` adds the log tail."""
        return self.view(detail).to_json()

    def view(self, detail: bool = False) -> JobView:
        """The job as the faces see it; ``detail`` adds the spec and the log tail."""
        return JobView(
            id=self.id,
            name=self.spec.name,
            state=self.state,
            priority=self.spec.priority,
            entrypoint=self.spec.entrypoint(),
            working_dir=self.spec.working_dir,
            submitter=self.submitter,
            created=self.created,
            submitted=self.submitted,
            started=self.started,
            ended=self.ended,
            exit_code=self.exit_code,
            message=self.message,
            ray_id=self.ray_id,
            attempt=self.attempt,
            num_cpus=self.spec.num_cpus,
            num_gpus=self.spec.num_gpus,
            node=self.node,
            spec=self.spec if detail else None,
            log_tail=self.log_tail if detail else None,
        )


@dataclass(frozen=True)
class JobView:
    """One job as it crosses the control socket: what ``jobs``, ``job``, ``submit``,
    ``retry`` and ``job_logs`` send, and the one reader every face uses for it."""

    id: str
    name: str
    state: str
    priority: int = 0
    entrypoint: str = ""
    working_dir: str = ""
    submitter: str = ""
    created: float | None = None
    submitted: float | None = None
    started: float | None = None  # when Ray first reported it RUNNING
    ended: float | None = None
    exit_code: int | None = None
    message: str = ""
    ray_id: str = ""
    attempt: int = 1
    num_cpus: float | None = None
    num_gpus: float | None = None
    node: str = ""
    spec: JobSpec | None = None  # only in ``job``'s detailed answer
    log_tail: str | None = None  # ditto

    def to_json(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in _VIEW_FIELDS}
        if self.spec is not None:
            out["spec"] = self.spec.to_json()
        if self.log_tail is not None:
            out["log_tail"] = self.log_tail
        return out

    @classmethod
    def from_json(cls, doc: Any) -> JobView:
        """Read a job from the control API; raise :class:`JobError` if it is not one."""
        if not isinstance(doc, Mapping):
            raise JobError("a job must be a JSON object")
        job_id, state = doc.get("id"), doc.get("state")
        if not isinstance(job_id, str) or not isinstance(state, str):
            raise JobError("a job needs a string 'id' and 'state'")
        values = {name: read(doc.get(name)) for name, read in _VIEW_READERS.items()}
        spec, log_tail = doc.get("spec"), doc.get("log_tail")
        return cls(
            id=job_id,
            state=state,
            **values,
            spec=JobSpec.from_json(spec) if spec is not None else None,
            log_tail=str(log_tail) if log_tail is not None else None,
        )

    def run_time(self, now: float) -> float | None:
        """Seconds it has run (or ran), once started."""
        return max(0.0, (self.ended or now) - self.started) if self.started else None


_VIEW_FIELDS = (
    "id",
    "name",
    "state",
    "priority",
    "entrypoint",
    "working_dir",
    "submitter",
    "created",
    "submitted",
    "started",
    "ended",
    "exit_code",
    "message",
    "ray_id",
    "attempt",
    "num_cpus",
    "num_gpus",
    "node",
)


def _time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JobError(f"a job's times and resources are numbers, not {type(value).__name__}")
    return float(value)


def _whole(value: Any, default: int | None) -> Any:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobError(f"a job's counts are whole numbers, not {type(value).__name__}")
    return value


def _text(value: Any) -> str:
    return str(value or "")


# How JobView.from_json reads each plain field (id, state, spec and log_tail apart).
_VIEW_READERS: dict[str, Callable[[Any], Any]] = {
    "name": _text,
    "priority": lambda v: _whole(v, 0),
    "entrypoint": _text,
    "working_dir": _text,
    "submitter": _text,
    "created": _time,
    "submitted": _time,
    "started": _time,
    "ended": _time,
    "exit_code": lambda v: _whole(v, None),
    "message": _text,
    "ray_id": _text,
    "attempt": lambda v: _whole(v, 1) or 1,
    "num_cpus": _time,
    "num_gpus": _time,
    "node": _text,
}
