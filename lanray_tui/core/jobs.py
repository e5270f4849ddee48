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

This module is the door to three smaller ones, and re-exports what they offer:

- :mod:`.jobs_records`: the states, :class:`JobSpec`, :class:`Job`, :class:`JobView`;
- :mod:`.jobs_queue`: :class:`JobQueue`, the queue in SQLite;
- :mod:`.jobs_logs`: reading a job's log (:func:`summarize_failure`, :func:`log_tail`).
"""

from __future__ import annotations

from .jobs_logs import last_log_line, log_tail, summarize_failure
from .jobs_queue import SCHEMA_VERSION, JobQueue
from .jobs_records import (
    ACTIVE,
    CANCELLED,
    FAILED,
    FINAL,
    LOG_TAIL_LINES,
    LOST,
    MAX_NAME,
    MAX_PRIORITY,
    QUEUED,
    RETRYABLE,
    RUNNING,
    STATES,
    SUBMITTED,
    SUCCEEDED,
    Job,
    JobError,
    JobSpec,
    JobView,
)

__all__ = [
    "ACTIVE",
    "CANCELLED",
    "FAILED",
    "FINAL",
    "LOG_TAIL_LINES",
    "LOST",
    "MAX_NAME",
    "MAX_PRIORITY",
    "QUEUED",
    "RETRYABLE",
    "RUNNING",
    "SCHEMA_VERSION",
    "STATES",
    "SUBMITTED",
    "SUCCEEDED",
    "Job",
    "JobError",
    "JobQueue",
    "JobSpec",
    "JobView",
    "last_log_line",
    "log_tail",
    "summarize_failure",
]
