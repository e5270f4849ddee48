"""Starting, waiting for and stopping this node's agent: shared by the CLI and the TUI."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..adapters import system
from . import credentials
from .agent import tail
from .control import AgentError, ControlClient
from .credentials import Credentials
from .errors import LanrayError, NotRunningError
from .models import AgentInfo
from .paths import Paths, ensure_private_dir

Progress = Callable[[str], None]


def client(paths: Paths) -> ControlClient:
    return ControlClient(paths.socket)


def running_agent(paths: Paths) -> AgentInfo | None:
    """This node's agent, if one answers."""
    try:
        return AgentInfo.from_json(client(paths).call("info", timeout=3.0))
    except NotRunningError:
        return None


def refuse_if_running(paths: Paths) -> None:
    """A second ``host`` or ``join`` on a node says what already runs instead of starting."""
    info = running_agent(paths)
    if info is not None:
        what = "hosts" if info.role == "host" else "is joined to"
        raise LanrayError(
            f"this node already {what} cluster '{info.cluster_name}' (agent pid {info.pid}, "
            f"head {info.head_address}); see 'lanray-tui status' or stop it with 'lanray-tui leave'"
        )


def store_join_credentials(paths: Paths, creds: Credentials) -> None:
    ensure_private_dir(paths.data_dir)
    credentials.save(paths.credentials, creds)


def spawn_agent(
    paths: Paths, role: str, config_file: Path | None, extra: Sequence[str] = ()
) -> int:
    """Start the agent detached from this terminal; returns its PID. ``extra`` holds
    command-line settings (``--cpus 2`` ...) that the agent applies over the config."""
    ensure_private_dir(paths.state_dir)
    argv = [sys.executable, "-m", "lanray_tui"]
    if config_file is not None:
        argv += ["--config", str(config_file.resolve())]
    argv += ["agent", "--role", role, *extra]
    with open(paths.agent_log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no SIGHUP when the terminal or SSH session goes
            close_fds=True,
        )
    return proc.pid


def wait_ready(
    paths: Paths, pid: int, timeout: float, progress: Progress | None = None
) -> AgentInfo:
    """Wait until the agent reports Ray ready; raise with the agent's reason if it fails."""
    ctl = client(paths)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            info = AgentInfo.from_json(ctl.call("info", timeout=3.0))
        except (NotRunningError, AgentError):
            info = None
        if info is not None:
            if info.state != last and progress is not None:
                progress(info.state)
            last = info.state
            if info.state == "ready":
                return info
            if info.state == "failed":
                raise LanrayError(f"the agent could not start Ray: {info.detail}")
        if not system.pid_alive(pid):
            why = tail(paths.agent_log, 1) or "no output"
            raise LanrayError(f"the agent exited: {why}")
        time.sleep(0.05)
    raise LanrayError(f"the agent was not ready after {timeout:.0f} s (see {paths.agent_log})")


def leave(paths: Paths, timeout: float = 60.0) -> int:
    """Ask the agent to stop Ray and exit; wait until it has. Returns its PID."""
    info = running_agent(paths)
    if info is None:
        raise NotRunningError("no lanray-tui agent runs on this node: nothing to leave")
    client(paths).call("leave")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not system.pid_alive(info.pid) and not paths.socket.exists():
            return info.pid
        time.sleep(0.05)
    raise LanrayError(f"the agent (pid {info.pid}) did not stop within {timeout:.0f} s")
