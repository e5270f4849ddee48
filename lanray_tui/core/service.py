"""The agent as a systemd service, for headless lab machines: a unit that starts it at boot,
restarts it on failure and gives its log to journald.

Run as root, the unit is a system unit; as a user, a user unit with lingering on, so that it
starts at boot without a login. Either way it runs ``lanray-tui agent --role ROLE`` in the
foreground with the installing user's HOME and XDG dirs, so the CLI and the TUI find its
socket, and a joined node rejoins after a reboot with its stored credentials, with no code.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "lanray-tui.service"
ENV_KEEP = ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")
NO_SYSTEMD = (
    "systemd is not running on this machine: start 'lanray-tui agent --role ROLE' at boot "
    "another way (for instance a cron @reboot line)"
)


@dataclass(frozen=True)
class UnitPlan:
    """Where the unit goes and what it runs."""

    path: Path
    system: bool  # a system unit (root), else a user unit
    role: str  # "host" | "worker"
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    @property
    def systemctl(self) -> list[str]:
        return ["systemctl"] if self.system else ["systemctl", "--user"]

    def text(self) -> str:
        what = "hosts the cluster" if self.role == "host" else "joins the cluster"
        env = "".join(f"Environment={_quote(f'{k}={v}')}\n" for k, v in self.env)
        return (
            "[Unit]\n"
            f"Description=lanray-tui agent: this machine {what} on the LAN\n"
            "Wants=network-online.target\n"
            "After=network-online.target\n"
            "\n"
            "[Service]\n"
            "Type=simple\n"
            f"ExecStart={shlex.join(self.argv)}\n"
            f"{env}"
            "Environment=PYTHONUNBUFFERED=1\n"
            "Restart=on-failure\n"
            "RestartSec=5\n"
            # the agent stops Ray on SIGTERM; should the agent die, its Ray runs on and the
            # restarted agent adopts it (not restarted: the jobs on it go on)
            "KillMode=process\n"
            "TimeoutStopSec=90\n"
            "\n"
            "[Install]\n"
            f"WantedBy={'multi-user.target' if self.system else 'default.target'}\n"
        )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plan(
    role: str,
    config_file: Path | None = None,
    *,
    uid: int | None = None,
    environ: Mapping[str, str] | None = None,
    python: str | None = None,
) -> UnitPlan:
    """The unit for this user: a system unit for root, a user unit otherwise."""
    env = dict(os.environ if environ is None else environ)
    system = (os.geteuid() if uid is None else uid) == 0
    home = Path(env.get("HOME", "~")).expanduser()
    if system:
        path = Path("/etc/systemd/system") / UNIT_NAME
    else:
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        path = config_home / "systemd" / "user" / UNIT_NAME
    argv = [python or sys.executable, "-m", "lanray_tui"]
    if config_file is not None:
        argv += ["--config", str(config_file.resolve())]
    argv += ["agent", "--role", role]
    kept = tuple((k, env[k]) for k in ENV_KEEP if env.get(k))
    return UnitPlan(path, system, role, tuple(argv), kept)
