"""The cluster's job queue: what a job is, its states, and the queue kept in SQLite.

A job is a Python script (run with ``python``) or a command, with its arguments, an uploaded
``working_dir`` (a ``gcs://...zip`` URI that Ray holds), driver resources, environment
variables, a name and a priority. The host agent keeps every job in one SQLite file, so a
queued or finished job survives the agent's crash; :mod:`.job_service` moves jobs through
their states against Ray's Jobs API.

States::

    QUEUED -> SUBMITTED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED | LOST

A queued job is cancelled on the spot; ``retry`` puts a FAILED, LOST or CANCELLED job back
in the queue for a new Ray submission. Jobs run by priority (higher first), then in the
order they were queued.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
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
SCHEMA_VERSION = 2  # 2: the driver's node


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

    @classmethod
    def from_json(cls, doc: Any) -> JobSpec:
        """Validate a spec from the control API; raise :class:`JobError` with the reason."""
        if not isinstance(doc, Mapping):
            raise JobError("a job spec must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise JobError(f"unknown job spec field '{unknown[0]}'")
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
        num_cpus = _resource(doc.get("num_cpus"), "num_cpus")
        num_gpus = _resource(doc.get("num_gpus"), "num_gpus")
        env = doc.get("env", {}) or {}
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in env.items()
        ):
            raise JobError("'env' must map variable names to strings")
        for k in env:
            if not (k[0].isalpha() or k[0] == "_") or not all(c.isalnum() or c == "_" for c in k):
                raise JobError(f"'{k}' is not an environment variable name")
        name = doc.get("name", "") or ""
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise JobError(f"a job name must be a string of at most {MAX_NAME} characters")
        name = _one_line(name, MAX_NAME)
        priority = doc.get("priority", 0)
        if priority is None:
            priority = 0
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise JobError("'priority' must be a whole number")
        if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise JobError(f"'priority' must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
        spec = cls(
            script=script,
            command=list(command),
            args=list(args),
            working_dir=working_dir,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            env=dict(env),
            name=name,
            priority=priority,
        )
        return spec if name else replace(spec, name=spec.default_name())

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


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


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
        job_id, name, state = doc.get("id"), doc.get("name", ""), doc.get("state")
        if not isinstance(job_id, str) or not isinstance(state, str):
            raise JobError("a job needs a string 'id' and 'state'")
        spec = doc.get("spec")
        log_tail = doc.get("log_tail")
        return cls(
            id=job_id,
            name=str(name or ""),
            state=state,
            priority=_whole(doc.get("priority"), 0),
            entrypoint=str(doc.get("entrypoint") or ""),
            working_dir=str(doc.get("working_dir") or ""),
            submitter=str(doc.get("submitter") or ""),
            created=_time(doc.get("created")),
            submitted=_time(doc.get("submitted")),
            started=_time(doc.get("started")),
            ended=_time(doc.get("ended")),
            exit_code=_whole(doc.get("exit_code"), None),
            message=str(doc.get("message") or ""),
            ray_id=str(doc.get("ray_id") or ""),
            attempt=_whole(doc.get("attempt"), 1) or 1,
            num_cpus=_time(doc.get("num_cpus")),
            num_gpus=_time(doc.get("num_gpus")),
            node=str(doc.get("node") or ""),
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


_COLUMNS = (
    "id",
    "spec",
    "state",
    "priority",
    "pos",
    "created",
    "submitter",
    "submitted",
    "started",
    "ended",
    "exit_code",
    "message",
    "ray_id",
    "attempt",
    "log_tail",
    "node",
)
_MUTABLE = frozenset(_COLUMNS) - {"id", "spec", "priority", "created", "submitter"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    pos INTEGER NOT NULL,
    created REAL NOT NULL,
    submitter TEXT NOT NULL DEFAULT '',
    submitted REAL,
    started REAL,
    ended REAL,
    exit_code INTEGER,
    message TEXT NOT NULL DEFAULT '',
    ray_id TEXT NOT NULL DEFAULT '',
    attempt INTEGER NOT NULL DEFAULT 1,
    log_tail TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, priority DESC, pos);
"""


class JobQueue:
    """The jobs of one cluster in SQLite (WAL): safe to use from several threads.

    Every change is one transaction, committed before the call returns, so a SIGKILL of
    the agent loses nothing that a caller was told about. State changes are
    compare-and-set (:meth:`transition`): two actors racing on one job cannot both win.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: crash-safe
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JobError(
                    f"{path}: the job database is from a newer lanray-tui (schema {version})"
                )
            self._db.executescript(_SCHEMA)
            if 0 < version < 2:  # a queue of an older lanray-tui: keep every job
                self._db.execute("ALTER TABLE jobs ADD COLUMN node TEXT NOT NULL DEFAULT ''")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise JobError(f"{path}: cannot open the job database ({exc})") from None
        with contextlib.suppress(OSError):
            path.chmod(0o600)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ----- reading ------------------------------------------------------------------------

    def find(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def get(self, job_id: str) -> Job:
        """The job, or :class:`JobError` naming the id that is not there."""
        job = self.find(str(job_id).strip())
        if job is None:
            raise JobError(f"no job '{job_id}' (see 'lanray-tui jobs')")
        return job

    def jobs(self, states: Iterable[str] | None = None) -> list[Job]:
        """Jobs in the order they were submitted (optionally only those in ``states``)."""
        sql = "SELECT * FROM jobs"
        params: tuple[str, ...] = ()
        if states is not None:
            wanted = tuple(states)
            sql += f" WHERE state IN ({','.join('?' * len(wanted))})"
            params = wanted
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", params).fetchall()
        return [_job(r) for r in rows]

    def queued(self) -> list[Job]:
        """Queued jobs in the order they will run: priority (higher first), then FIFO."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY priority DESC, pos", (QUEUED,)
            ).fetchall()
        return [_job(r) for r in rows]

    def next_queued(self) -> Job | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY priority DESC, pos LIMIT 1",
                (QUEUED,),
            ).fetchone()
        return _job(row) if row is not None else None

    def active(self) -> list[Job]:
        """Jobs handed to Ray that have not ended (they hold the running slots)."""
        return self.jobs(sorted(ACTIVE))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # ----- changing -----------------------------------------------------------------------

    def add(self, spec: JobSpec, submitter: str = "", now: float | None = None) -> Job:
        """Queue a new job with a fresh short id (``j-4f2a``)."""
        created = time.time() if now is None else now
        with self._tx() as db:
            job_id = self._new_id(db)
            db.execute(
                "INSERT INTO jobs (id, spec, state, priority, pos, created, submitter)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    json.dumps(spec.to_json()),
                    QUEUED,
                    spec.priority,
                    self._next_pos(db),
                    created,
                    _one_line(submitter, 120),
                ),
            )
        return self.get(job_id)

    def transition(
        self, job_id: str, from_states: Iterable[str], to_state: str, **changes: Any
    ) -> Job | None:
        """Move a job to ``to_state`` only if it is in one of ``from_states``; set
        ``changes`` with it. Returns the updated job, or None if it was not in those states."""
        if to_state not in STATES:
            raise ValueError(f"unknown state {to_state}")
        wanted = tuple(from_states)
        sets, values = self._sets({**changes, "state": to_state})
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND state IN ({','.join('?' * len(wanted))})",
                (*values, job_id, *wanted),
            )
            changed = cur.rowcount == 1
        return self.find(job_id) if changed else None

    def update(self, job_id: str, in_states: Iterable[str], **changes: Any) -> bool:
        """Set fields of a job that is still in one of ``in_states`` (not its state)."""
        if "state" in changes:
            raise ValueError("use transition() to change a state")
        wanted = tuple(in_states)
        sets, values = self._sets(changes)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND state IN ({','.join('?' * len(wanted))})",
                (*values, job_id, *wanted),
            )
            return cur.rowcount == 1

    def retry(self, job_id: str) -> Job:
        """Put a FAILED, LOST or CANCELLED job back at the end of its priority's queue."""
        job = self.get(job_id)
        if job.state not in RETRYABLE:
            raise JobError(
                f"job {job.id} is {job.state}: only failed, lost or cancelled jobs can be retried"
            )
        with self._tx() as db:
            sets, values = self._sets(
                {
                    "state": QUEUED,
                    "pos": self._next_pos(db),
                    "submitted": None,
                    "started": None,
                    "ended": None,
                    "exit_code": None,
                    "message": "",
                    "ray_id": "",
                    "attempt": job.attempt + 1,
                    "log_tail": "",
                }
            )
            cur = db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND state = ?", (*values, job.id, job.state)
            )
            if cur.rowcount != 1:
                raise JobError(f"job {job.id} changed state meanwhile: try again")
        return self.get(job.id)

    # ----- helpers ------------------------------------------------------------------------

    @staticmethod
    def _sets(changes: Mapping[str, Any]) -> tuple[str, list[Any]]:
        bad = [k for k in changes if k not in _MUTABLE]
        if bad:
            raise ValueError(f"cannot set {bad[0]}")
        return ", ".join(f"{k} = ?" for k in changes), list(changes.values())

    @staticmethod
    def _next_pos(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT COALESCE(MAX(pos), 0) + 1 FROM jobs").fetchone()[0])

    @staticmethod
    def _new_id(db: sqlite3.Connection) -> str:
        for attempt in range(64):
            job_id = "j-" + secrets.token_hex(2 if attempt < 16 else 4)
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                return job_id
        raise JobError("could not find a free job id")  # pragma: no cover - 2^32 ids


def _job(row: sqlite3.Row) -> Job:
    spec_doc = json.loads(row["spec"])
    spec = JobSpec(**{k: v for k, v in spec_doc.items() if k in JobSpec.__dataclass_fields__})
    return Job(
        id=row["id"],
        spec=spec,
        state=row["state"],
        created=row["created"],
        submitter=row["submitter"],
        submitted=row["submitted"],
        started=row["started"],
        ended=row["ended"],
        exit_code=row["exit_code"],
        message=row["message"],
        ray_id=row["ray_id"],
        attempt=row["attempt"],
        log_tail=row["log_tail"],
        node=row["node"],
    )


def summarize_failure(ray_message: str, logs: str) -> str:
    """One line saying why a job failed: Ray's reason, then the last line its driver printed.

    Ray's message for a non-zero exit carries the whole log; only its first sentence is kept.
    """
    first = (ray_message or "").strip().splitlines()[0] if (ray_message or "").strip() else ""
    for marker in (", last available logs", ". No logs available", ", logs:"):
        cut = first.find(marker)
        if cut >= 0:
            first = first[:cut]
    first = first.rstrip(".: ")
    last = last_log_line(logs)
    if last and last not in first:
        return _one_line(f"{first}: {last}" if first else last)
    return _one_line(first or "the job failed")


def last_log_line(logs: str) -> str:
    """The last line of a job's log that says something (Ray's own INFO lines skipped)."""
    for line in reversed((logs or "").splitlines()):
        text = line.strip()
        if not text or _is_ray_chatter(text):
            continue
        return text
    return ""


def log_tail(logs: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join((logs or "").splitlines()[-lines:])


def _is_ray_chatter(line: str) -> bool:
    return (" INFO " in line and ".py:" in line and " -- " in line) or line.startswith(
        "Running entrypoint for job"
    )
