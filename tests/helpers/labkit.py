"""Running lanray-tui on lab nodes from tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from lanray_tui.core import lab as labmod

LANRAY = [sys.executable, "-m", "lanray_tui"]


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment for a lab node: the real-LAN guard does not apply there."""
    env = {k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"}
    env.update(extra or {})
    return env


class Node:
    """One lab node, driven through real subprocesses in its namespaces."""

    def __init__(self, lab: labmod.Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.address = lab.node(name).address

    def run(
        self,
        argv: list[str],
        timeout: float = 120,
        env: dict[str, str] | None = None,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = labmod.exec_argv(self.lab, self.name, argv, env=node_env(env))
        stdin = None if input is not None else subprocess.DEVNULL
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=stdin, input=input
        )
        if check and p.returncode != 0:
            raise AssertionError(f"{self.name}: {argv} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def lanray(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run([*LANRAY, *args], **kw)

    def popen(
        self, argv: list[str], env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        return labmod.run(self.lab, self.name, argv, env=node_env(env), text=True, **kw)

    def status(self) -> dict[str, Any]:
        p = self.lanray("status", "--json", check=True, timeout=30)
        return json.loads(p.stdout)  # type: ignore[no-any-return]

    def agent_running(self) -> bool:
        return self.lanray("status", "--json", timeout=30).returncode == 0

    def token(self) -> str:
        return self.lanray("token", check=True).stdout.strip()

    def ray_env(self, token: str) -> dict[str, str]:
        """What a Ray driver on this node needs: token auth and this node's own TLS files
        (Ray's gRPC is mutual TLS)."""
        from pathlib import Path

        from lanray_tui.core.cluster_ca import NodeTls

        data = Path(self.lab.node(self.name).env()["XDG_DATA_HOME"])
        tls = NodeTls(data / "lanray-tui" / "tls")
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, **tls.ray_env()}

    def join_by_token(self, host: Node, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """``join HOST --token -`` with the token on stdin: never on a command line."""
        token = host.token()
        return self.lanray("join", host.address, "--token", "-", *args, input=token + "\n", **kw)

    def leave(self) -> None:
        if self.agent_running():
            self.lanray("leave", check=True, timeout=90)


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s (last: {last!r})")


def node_states(host: Node) -> dict[str, str]:
    """{ip: state} as the host sees it; ALIVE wins over older DEAD entries of the same IP."""
    out: dict[str, str] = {}
    for n in host.status()["nodes"]:
        if out.get(n["ip"]) != "ALIVE":
            out[n["ip"]] = n["state"]
    return out
