"""A one-line agent for unit tests: a real Unix socket that answers each request with what a
test's function says (bytes: one or more protocol lines), and records the ops it was sent."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lanray_tui.core import protocol as p
from lanray_tui.core.models import AgentInfo

AGENT = AgentInfo(
    pid=7,
    version="0.1.0",
    role="host",
    state="ready",
    detail="",
    cluster_name="lab",
    cluster_id="c0ffee",
    head_address="10.0.0.1:6379",
    node_ip="10.0.0.1",
    dashboard_url="http://10.0.0.1:8265",
    ray_version="2.60.0",
    lending={"state": "lending", "reason": "lent to the cluster"},
)


class AgentStub:
    """Serves ``answer(request JSON) -> bytes`` on ``path`` from a thread until :meth:`close`."""

    def __init__(self, path: Path, answer: Callable[[dict[str, Any]], bytes]) -> None:
        self.path = path
        self.answer = answer
        self.seen: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                req = json.loads(conn.makefile("rb").readline())
                self.seen.append(req["op"])
                conn.sendall(self.answer(req))

    def close(self) -> None:
        self.sock.close()


def answers(info: dict[str, Any], **replies: Any) -> Callable[[dict[str, Any]], bytes]:
    """An ``answer`` that sends ``info`` to ``info`` and, to each op in ``replies``, its reply
    object (bytes as they are: a stream, an error line)."""

    def answer(req: dict[str, Any]) -> bytes:
        if req["op"] == "info":
            return p.encode({"ok": True, "result": info})
        reply = replies.get(req["op"])
        if reply is None:
            return p.error_line(f"'{req['op']}' is not available here")
        return reply if isinstance(reply, bytes) else p.ok_line(reply)

    return answer
