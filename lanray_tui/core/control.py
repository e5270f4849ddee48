"""The agent's local control API: newline-delimited JSON over a Unix socket (mode 0600).

A request is one line ``{"op": NAME, ...}``; the reply is one line ``{"ok": true, "result":
...}`` or ``{"ok": false, "error": "one line"}``. Streaming ops reply with many lines and end
with ``{"end": true}``. Only this user can open the socket: the directory is 0700 and the
socket 0600, so the token it can hand out stays with the owner of the node.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import LanrayError, NotRunningError

MAX_LINE = 1 << 20


class AgentError(LanrayError):
    """The agent answered with an error (its one line is the message)."""


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class ControlClient:
    """Blocking client; the TUI calls it from thread workers, the CLI directly."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _connect(self, timeout: float | None) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            raise NotRunningError(
                "no lanray-tui agent runs on this node "
                "(start one with 'lanray-tui host' or 'lanray-tui join')"
            ) from None
        except OSError as exc:
            s.close()
            raise NotRunningError(f"cannot reach the agent at {self.socket_path}: {exc}") from None
        return s

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        """Send one request and return its result, or raise :class:`AgentError`."""
        with self._connect(timeout or self.timeout) as s:
            s.sendall(encode({"op": op, **args}))
            reader = s.makefile("rb")
            try:
                line = reader.readline(MAX_LINE)
            except TimeoutError:
                raise AgentError(f"the agent did not answer '{op}' in time") from None
        return _result(line, op)

    def stream(self, op: str, **args: Any) -> Iterator[Any]:
        """Send one request and yield each streamed item until the agent ends the stream."""
        with self._connect(None) as s:
            s.sendall(encode({"op": op, **args}))
            reader = s.makefile("rb")
            while True:
                line = reader.readline(MAX_LINE)
                if not line:
                    return
                msg = json.loads(line)
                if msg.get("end"):
                    return
                yield _result(line, op)

    def alive(self) -> bool:
        """True if an agent answers on the socket."""
        try:
            self.call("info", timeout=2.0)
            return True
        except (NotRunningError, AgentError):
            return False


def _result(line: bytes, op: str) -> Any:
    if not line:
        raise AgentError(f"the agent closed the connection during '{op}'")
    try:
        msg = json.loads(line)
    except ValueError:
        raise AgentError(f"the agent sent a bad reply to '{op}'") from None
    if not msg.get("ok"):
        raise AgentError(str(msg.get("error", "unknown error")))
    return msg.get("result")
