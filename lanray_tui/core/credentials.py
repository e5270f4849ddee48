"""Cluster credentials: the Ray token and the cluster key, stored with mode 0600.

The host makes them once per cluster; a joiner receives them when it pairs (or from
``--token``) and keeps them, so a later join or an automatic rejoin needs no code.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LanrayError


@dataclass(frozen=True)
class Credentials:
    """Everything a node needs to take part in one cluster. ``token`` and ``cluster_key``
    are secrets: never log or print them (``lanray-tui token`` is the one exception)."""

    cluster_id: str
    cluster_name: str
    token: str
    cluster_key: str  # hex; signs beacons once paired
    head_address: str = ""
    gcs_port: int = 6379
    dashboard_port: int = 8265

    @classmethod
    def new(cls, cluster_name: str) -> Credentials:
        return cls(
            cluster_id=secrets.token_hex(8),
            cluster_name=cluster_name,
            token=secrets.token_hex(32),
            cluster_key=secrets.token_hex(32),
        )

    def replace(self, **changes: object) -> Credentials:
        return Credentials(**{**asdict(self), **changes})

    @property
    def gcs_address(self) -> str:
        return f"{self.head_address}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Ray's dashboard and Jobs API: on the head's loopback only (they speak HTTP in
        clear), so this is for the host's own agent and CLI, never for another node."""
        return f"http://127.0.0.1:{self.dashboard_port}"


def save(path: Path, creds: Credentials) -> None:
    """Write atomically with mode 0600 (the file is never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(creds), f, indent=1)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load(path: Path) -> Credentials | None:
    """The stored credentials, or None if there are none; a damaged file is an error."""
    try:
        raw = json.loads(path.read_text())
        return Credentials(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise LanrayError(
            f"{path}: cluster credentials are damaged ({exc}); remove the file"
        ) from None
