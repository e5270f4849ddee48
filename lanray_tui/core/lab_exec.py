"""Running commands in the nodes of a lab, and plugging their cables in and out.

Split out of :mod:`lanray_tui.core.lab`, which re-exports every public name here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Any

import psutil

from lanray_tui.core.lab_model import Lab, _ip_batch, _tool


class NodeProcess(subprocess.Popen[Any]):
    """A process started by :func:`run`, whose signals reach the command in the node.

    The direct child is ``nsenter``, which does not pass signals on. Signalling the
    command instead works like signalling a plain child: ``nsenter`` reaps it, then exits
    the same way. Signalling ``nsenter`` (or its process group) would orphan the command
    to the host's PID 1, and the node's PID namespace cannot go away until that reaps it.
    """

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the command (to ``nsenter`` if it has not started it yet)."""
        self.poll()
        if self.returncode is not None:
            return
        try:
            targets = psutil.Process(self.pid).children()
        except psutil.Error:
            targets = []
        for child in targets:
            with contextlib.suppress(psutil.Error):
                child.send_signal(sig)
        if not targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def exec_argv(
    lab: Lab,
    node: str,
    argv: list[str],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> list[str]:
    """The command line that runs ``argv`` on ``node``.

    It enters the node's network, PID and mount namespaces, changes to ``cwd`` (default:
    the current dir), sets HOME, XDG_* and TMPDIR to the node's own and keeps it on the
    node's CPUs. The rest of the environment is the caller's, or exactly ``env`` if given.
    """
    target = lab.node(node)
    command = [
        _tool("nsenter"),
        "-t",
        str(target.init_pid),
        "-n",
        "-p",
        "-m",
        "-u",
        "--",
        _tool("env"),
    ]
    if env is not None:
        command.append("-i")
    # Entering a mount namespace moves the cwd to its root; `env -C` moves it back.
    command += ["-C", os.path.abspath(cwd) if cwd is not None else os.getcwd(), "--"]
    if env is not None:
        command += [f"{k}={v}" for k, v in env.items()]
    # Later assignments win, so the node's dirs override those in `env`.
    command += [f"{k}={v}" for k, v in target.env().items()]
    if target.cpus:
        command += [_tool("taskset"), "--cpu-list", ",".join(map(str, target.cpus))]
    return [*command, *argv]


def run(lab: Lab, node: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` on ``node``; keyword arguments go to :class:`subprocess.Popen`.

    ``cwd`` and ``env`` mean what they mean for :func:`exec_argv`. ``terminate()``,
    ``kill()`` and ``send_signal()`` reach the command itself (see :class:`NodeProcess`).
    """
    cwd = popen_kwargs.pop("cwd", None)
    env = popen_kwargs.pop("env", None)
    command = exec_argv(lab, node, argv, cwd=None if cwd is None else os.fspath(cwd), env=env)
    return NodeProcess(command, **popen_kwargs)


def link(lab: Lab, node: str, up: bool) -> None:
    """Set ``node``'s cable to the bridge up or down (its bridge-side veth)."""
    target = lab.node(node)
    _ip_batch(_tool("ip"), lab.bridge_netns, [f"link set {target.name} {'up' if up else 'down'}"])
