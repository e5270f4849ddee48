"""systemd, through its own commands: is it running, and systemctl/loginctl calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..core.types import LanrayError


def running() -> bool:
    """True when systemd is this machine's init (what ``sd_booted()`` checks)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def run(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LanrayError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LanrayError(f"'{' '.join(argv)}' took more than {timeout:.0f} s") from None


def checked(argv: list[str]) -> str:
    p = run(argv)
    if p.returncode != 0:
        why = (p.stderr or p.stdout).strip().splitlines()
        raise LanrayError(f"'{' '.join(argv)}' failed: {why[-1] if why else p.returncode}")
    return p.stdout


def enable_linger() -> None:
    """A user's units start at boot without a login (loginctl enable-linger)."""
    user = os.environ.get("USER") or str(os.getuid())
    checked(["loginctl", "enable-linger", user])
