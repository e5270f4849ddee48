"""Where lanray-tui keeps things: XDG directories under this user's HOME.

Everything the agent writes lives below these directories, so two agents with different
HOMEs (or XDG variables) on one machine are independent nodes. The lab relies on that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP = "lanray-tui"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    # The XDG spec says relative paths are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path(os.path.expanduser(fallback))


@dataclass(frozen=True)
class Paths:
    """The directories of one node, resolved from the environment once."""

    config_dir: Path
    data_dir: Path
    state_dir: Path
    runtime_dir: Path

    @classmethod
    def from_env(cls) -> Paths:
        """Resolve from ``XDG_*`` and ``HOME``; the runtime dir falls back under the cache dir."""
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        runtime_dir = (
            Path(runtime) / APP
            if runtime and os.path.isabs(runtime)
            else _xdg("XDG_CACHE_HOME", "~/.cache") / APP / "run"
        )
        return cls(
            config_dir=_xdg("XDG_CONFIG_HOME", "~/.config") / APP,
            data_dir=_xdg("XDG_DATA_HOME", "~/.local/share") / APP,
            state_dir=_xdg("XDG_STATE_HOME", "~/.local/state") / APP,
            runtime_dir=runtime_dir,
        )

    @property
    def user_config(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def socket(self) -> Path:
        """The agent's control socket (mode 0600)."""
        return self.runtime_dir / "agent.sock"

    @property
    def agent_log(self) -> Path:
        return self.state_dir / "agent.log"

    @property
    def ray_log(self) -> Path:
        """What ``ray start --block`` prints, kept for ``logs`` and for failure messages."""
        return self.state_dir / "ray-start.log"

    @property
    def ray_record(self) -> Path:
        """Which ``ray start`` this node's agent started (a restarted agent adopts it)."""
        return self.state_dir / "ray.json"

    @property
    def credentials(self) -> Path:
        """Cluster credentials (token, cluster key): mode 0600."""
        return self.data_dir / "cluster.json"

    @property
    def tls_dir(self) -> Path:
        """This node's key and certificate and the cluster CA's (see :mod:`.cluster_ca`)."""
        return self.data_dir / "tls"

    @property
    def ray_temp_dir(self) -> Path:
        """Ray's --temp-dir. Kept short: Ray's socket paths must fit in 107 bytes."""
        return self.runtime_dir / "ray"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it mode 0700."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
