"""The records of a lab (:class:`Lab`, :class:`LabNode`), a node's dirs, and the system
tools and processes it drives (``ip``, signals).

Split out of :mod:`lanray_tui.core.lab`, which re-exports every public name here.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from lanray_tui.core.errors import LanrayError

_NAME = re.compile(r"[a-z0-9]{1,8}")
_NETNS = re.compile(r"lanray-([a-z0-9]{1,8})-(br|n[0-9]+)")
_PACKAGES = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "taskset": "util-linux",
    "env": "coreutils",
}
_IP_TIMEOUT = 10.0


class LabError(LanrayError):
    """The lab cannot be brought up, found, used or taken down."""


@dataclass(frozen=True)
class LabNode:
    """One node of a lab: a network namespace, a PID namespace and its own dirs."""

    name: str
    address: str
    netns: str
    init_pid: int
    root: Path
    cpus: tuple[int, ...] = ()  # the CPUs it runs on; () for all of the machine's

    def env(self) -> dict[str, str]:
        """The HOME, XDG_* and TMPDIR variables that give this node its own dirs."""
        home = self.root / "home"
        return {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "TMPDIR": str(self.root / "tmp"),
        }


@dataclass(frozen=True)
class Lab:
    """A lab that is up: its subnet, its bridge namespace and its nodes."""

    name: str
    subnet: str
    broadcast: str
    bridge_netns: str
    nodes: tuple[LabNode, ...]

    def node(self, name: str) -> LabNode:
        """The node called ``name`` ("n1", "n2", ...)."""
        for node in self.nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in self.nodes)
        raise LabError(f"no node {name!r} in lab {self.name!r} (nodes: {names})")


def _ip_batch(ip: str, netns: str | None, lines: list[str], force: bool = False) -> None:
    argv = [ip, *(["-n", netns] if netns else []), *(["-force"] if force else []), "-batch", "-"]
    try:
        result = subprocess.run(
            argv,
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=_IP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} took more than {_IP_TIMEOUT:.0f} s") from None
    if result.returncode != 0:
        why = _one_line(result.stderr.strip().splitlines()[0] if result.stderr.strip() else "")
        where = f" in {netns}" if netns else ""
        raise LabError(f"ip failed{where}: {why or f'exit code {result.returncode}'}")


def _tool(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise LabError(f"the lab needs {tool!r}; install the {_PACKAGES[tool]} package")
    return path


def _netns_list() -> list[str]:
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if ip is None:
        return []
    out = subprocess.run(
        [ip, "netns", "list"], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _lab_netns(name: str) -> list[str]:
    return [ns for ns in _netns_list() if (m := _NETNS.fullmatch(ns)) and m.group(1) == name]


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise LabError(f"bad lab name {name!r}: use 1 to 8 of a-z and 0-9")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until ``procs`` are dead; zombies count as dead (their parents may be others)."""
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
        procs = [p for p in procs if _alive(p)]
        if procs:
            time.sleep(0.01)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _make_node_dirs(root: Path) -> None:
    root.mkdir()
    for sub in ("home", "tmp", "run"):
        (root / sub).mkdir()
        (root / sub).chmod(0o700)
    for sub in (".config", ".local/share", ".local/state", ".cache"):
        (root / "home" / sub).mkdir(parents=True)
    # Lab nodes share one machine's CPU: the other nodes' Ray would look like the owner
    # at work to the lending policy, so the lab lends unconditionally.
    conf = root / "home" / ".config" / "lanray-tui"
    conf.mkdir()
    (conf / "config.yaml").write_text(
        "# written by 'lanray-tui lab up': lab nodes share one machine's CPU\n"
        "lending:\n  enabled: false\n"
    )


def tools_needed() -> list[str]:
    """The commands a lab runs, each found with :func:`_tool` before a lab comes up."""
    return list(_PACKAGES)
