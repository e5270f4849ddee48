"""The agent's local control API: newline-delimited JSON over a Unix socket (mode 0600).

The framing is in :mod:`.framing`; the requests, replies and ops in :mod:`.protocol`, which
is imported on the first typed request: the first frame's ``info`` does not wait for it.
Only this user can open the socket: the directory is 0700 and the socket 0600, so the token
it can hand out stays with the owner of the node.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import LanrayError, NotRunningError
from .framing import MAX_LINE, ProtocolError, encode
from .models import PROTOCOL_VERSION, AgentInfo

if TYPE_CHECKING:
    from .protocol import Request

__all__ = ["MAX_LINE", "AgentError", "ControlClient", "encode"]

T = TypeVar("T")

#: Ops a client sends before it knows the agent's protocol: ``info`` tells it, and ``leave``
#: must stop an agent of any version (what the mismatch line tells the user to do).
UNCHECKED_OPS = frozenset({"info", "leave"})


class AgentError(LanrayError):
    """The agent answered with an error (its one line is the message)."""


class ControlClient:
    """Blocking client; the TUI calls it from thread workers, the CLI directly.

    The first request other than ``info`` and ``leave`` asks ``info`` first and refuses an
    agent of another protocol version with one line that says what to do.
    """

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._checked = False

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

    def request(self, req: Request[T], timeout: float | None = None) -> T:
        """Send one request and return its reply, or raise :class:`AgentError` with the
        agent's one line (:class:`~.framing.ProtocolError` for a bad reply)."""
        if req.STREAM:
            raise TypeError(f"'{req.OP}' is a stream: use stream()")
        self._handshake(req.OP)
        reply: T = req.read_reply(self._exchange(req.to_json(), timeout))
        if isinstance(reply, AgentInfo) and not self._checked:
            self._checked = reply.protocol == PROTOCOL_VERSION
        return reply

    def _exchange(self, doc: dict[str, Any], timeout: float | None) -> Any:
        """Send one request line; the ``result`` of its one reply line."""
        op = str(doc["op"])
        with self._connect(timeout or self.timeout) as s:
            s.sendall(encode(doc))
            reader = s.makefile("rb")
            try:
                line = reader.readline(MAX_LINE)
            except TimeoutError:
                raise AgentError(f"the agent did not answer '{op}' in time") from None
        return _result(line, op)

    def stream(self, req: Request[T]) -> Iterator[T]:
        """Send one request and yield each streamed item until the agent ends the stream."""
        if not req.STREAM:
            raise TypeError(f"'{req.OP}' is not a stream: use request()")
        self._handshake(req.OP)
        with self._connect(None) as s:
            s.sendall(encode(req.to_json()))
            reader = s.makefile("rb")
            while True:
                line = reader.readline(MAX_LINE)
                if not line:
                    return
                msg = json.loads(line)
                if isinstance(msg, dict) and msg.get("end"):
                    return
                item: T = req.read_reply(_result(line, req.OP))
                yield item

    def info(self, timeout: float | None = None) -> AgentInfo:
        """This node's agent, whatever its protocol (see :attr:`AgentInfo.protocol`).

        The same as ``request(InfoRequest())``, without loading the whole protocol: the
        TUI's first frame waits for this answer."""
        result = self._exchange({"op": "info"}, timeout)
        try:
            info = AgentInfo.from_json(result)
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("the agent sent a bad reply to 'info'") from None
        if not self._checked:
            self._checked = info.protocol == PROTOCOL_VERSION
        return info

    def _handshake(self, op: str) -> None:
        if self._checked or op in UNCHECKED_OPS:
            return
        info = self.info(min(self.timeout, 5.0))
        if info.protocol != PROTOCOL_VERSION:
            from .protocol import check_version

            check_version(info)  # the line that says what to do
        self._checked = True

    def alive(self) -> bool:
        """True if an agent answers on the socket."""
        try:
            self.info(timeout=2.0)
        except (NotRunningError, AgentError):
            return False
        except ProtocolError:
            pass  # it answered, in words this client does not read
        return True


def _result(line: bytes, op: str) -> Any:
    if not line:
        raise AgentError(f"the agent closed the connection during '{op}'")
    try:
        msg = json.loads(line)
    except ValueError:
        raise AgentError(f"the agent sent a bad reply to '{op}'") from None
    if not isinstance(msg, dict):
        raise AgentError(f"the agent sent a bad reply to '{op}'")
    if not msg.get("ok"):
        raise AgentError(str(msg.get("error", "unknown error")))
    return msg.get("result")
