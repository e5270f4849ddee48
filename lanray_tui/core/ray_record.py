"""Which Ray this node's agent started, so that a restarted agent can take it over.

A native Ray runs as ``ray start --block`` in a session of its own: when the agent that
started it dies (SIGKILL, an OOM kill, a crash), Ray and the jobs on it run on. The agent
records that process (``ray.json`` in the state dir, mode 0600); the next agent adopts it when
the record still describes a live process of this node and cluster: same PID and start time,
a ``ray start --block`` with this node's temp dir, the same cluster, role, address and token.
A Ray that is running but does not match is refused with one line that names the command
that clears it (``lanray-tui leave --force``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..adapters import system
from .errors import LanrayError

FORCE_HINT = "stop it with 'lanray-tui leave --force'"


@dataclass(frozen=True)
class RayRecord:
    pid: int
    started: float  # the process's start time (seconds since the epoch), against PID reuse
    cluster_id: str
    cluster_name: str
    role: str  # "host" | "worker"
    node_ip: str
    gcs_address: str
    token_sha256: str
    temp_dir: str
    tls_sha256: str = ""  # Ray's TLS files when it started (none: an older agent's, in clear)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def save(path: Path, record: RayRecord) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(record), f)
    os.replace(tmp, path)


def load(path: Path) -> RayRecord | None:
    try:
        data = json.loads(path.read_text())
        known = {k: data[k] for k in RayRecord.__dataclass_fields__ if k in data}
        return RayRecord(**known)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def record_started(path: Path, pid: int, want: RayRecord) -> None:
    """Record the Ray just started (``want`` with this PID and its start time)."""
    started = system.process_started(pid)
    if started is not None:
        save(path, RayRecord(**{**asdict(want), "pid": pid, "started": started}))


def _is_ray_start(pid: int, temp_dir: str) -> bool:
    argv = system.process_argv(pid)
    if "start" not in argv or "--block" not in argv:
        return False
    return "--temp-dir" in argv and temp_dir in argv


def running_ray(path: Path, temp_dir: Path) -> int | None:
    """The PID of this node's ``ray start --block`` if one runs (recorded or not)."""
    rec = load(path)
    mine = rec is not None and system.process_started(rec.pid) == rec.started
    if rec is not None and mine and _is_ray_start(rec.pid, rec.temp_dir):
        return rec.pid
    for pid in system.pids_with_argv(["start", "--block", str(temp_dir)]):
        if _is_ray_start(pid, str(temp_dir)):
            return pid
    return None


def adoptable(path: Path, want: RayRecord) -> int | None:
    """The PID of a running Ray this agent may take over, None if none runs.

    Raises :class:`LanrayError` (one line) when a Ray runs here that is not this
    cluster's, or that no agent recorded.
    """
    pid = running_ray(path, Path(want.temp_dir))
    if pid is None:
        return None
    rec = load(path)
    if rec is None or rec.pid != pid:
        raise LanrayError(
            f"Ray already runs on this node (pid {pid}) but no agent recorded it; {FORCE_HINT}"
        )
    if rec.cluster_id != want.cluster_id or rec.token_sha256 != want.token_sha256:
        raise LanrayError(
            f"Ray already runs on this node (pid {pid}) for another cluster "
            f"('{rec.cluster_name}'); {FORCE_HINT}"
        )
    if rec.role != want.role or rec.gcs_address != want.gcs_address:
        raise LanrayError(
            f"Ray already runs on this node (pid {pid}) as a {rec.role} of {rec.gcs_address}; "
            f"{FORCE_HINT}"
        )
    if rec.tls_sha256 != want.tls_sha256:
        raise LanrayError(
            f"Ray already runs on this node (pid {pid}) without this node's current TLS "
            f"certificate; {FORCE_HINT}"
        )
    if want.node_ip and rec.node_ip != want.node_ip:
        raise LanrayError(
            f"Ray already runs on this node (pid {pid}) on {rec.node_ip}, not {want.node_ip}; "
            f"{FORCE_HINT}"
        )
    return pid
