"""The job queue of one cluster, kept in SQLite so that a queued or finished job survives the
agent's crash. Jobs run by priority (higher first), then in the order they were queued."""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .jobs_records import (
    ACTIVE,
    QUEUED,
    RETRYABLE,
    STATES,
    Job,
    JobError,
    JobSpec,
    _one_line,
)

SCHEMA_VERSION = 2  # 2: the driver's node

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
