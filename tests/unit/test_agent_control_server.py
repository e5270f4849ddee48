"""Op dispatch over a real Unix socket: every malformed request shape gets one 'bad request'
line and the connection stays usable; handlers never take the server down; the cluster API
serves only its ops, and only with the token; a worker forwards the job ops to the host."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.core.agent.control_server import ControlServer
from lanray_tui.core.control import encode
from lanray_tui.core.errors import LanrayError

TOKEN = "t" * 64


async def echo(req: Any) -> Any:
    return {"echo": getattr(req, "x", None)}


async def boom(req: dict[str, Any]) -> Any:
    raise RuntimeError("kaput")


async def refuse(req: dict[str, Any]) -> Any:
    raise LanrayError("no such job")


def server() -> ControlServer:
    s = ControlServer(lambda: TOKEN)
    s.handlers.update(info=echo, status=echo, token=boom, job=refuse)
    return s


class Conn:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    async def ask(self, raw: bytes) -> dict[str, Any]:
        self.w.write(raw if raw.endswith(b"\n") else raw + b"\n")
        await self.w.drain()
        line = await asyncio.wait_for(self.r.readline(), 5)
        assert line, "the server closed the connection"
        msg: dict[str, Any] = json.loads(line)
        return msg


async def unix(tmp_path: Path, s: ControlServer, remote: bool = False) -> Conn:
    path = str(tmp_path / "s.sock")
    srv = await asyncio.start_unix_server(s.serve_remote if remote else s.serve_local, path)
    r, w = await asyncio.open_unix_connection(path)
    conn = Conn(r, w)
    conn.srv = srv  # type: ignore[attr-defined]
    return conn


MALFORMED = [
    b"not json",
    b"[]",
    b"1",
    b'"op"',
    b"null",
    b"{}",
    b'{"op": []}',
    b'{"op": {}}',
    b'{"op": 7}',
    b'{"op": null}',
    b'{"op": ""}',
    b'{"op": "' + b"x" * 100 + b'"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"op": "info", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"\xff\xfe\x00",
]


async def test_every_malformed_shape_is_one_line_and_the_connection_stays(tmp_path: Path) -> None:
    conn = await unix(tmp_path, server())
    for raw in MALFORMED:
        msg = await conn.ask(raw)
        assert msg["ok"] is False and "\n" not in msg["error"], raw[:40]
        error = msg["error"]
        assert error.startswith("bad request") or error.endswith("is not available here"), error
    assert await conn.ask(encode({"op": "info"})) == {"ok": True, "result": {"echo": None}}


async def test_handler_errors_are_one_line_replies(tmp_path: Path) -> None:
    conn = await unix(tmp_path, server())
    assert await conn.ask(encode({"op": "token"})) == {"ok": False, "error": "token failed: kaput"}
    assert await conn.ask(encode({"op": "job", "id": "j-1"})) == {
        "ok": False,
        "error": "no such job",
    }
    assert await conn.ask(encode({"op": "nope"})) == {
        "ok": False,
        "error": "'nope' is not available here",
    }
    assert (await conn.ask(encode({"op": "info"})))["ok"]
    bad = await conn.ask(encode({"op": "pause", "deadline_s": "soon"}))
    assert bad == {
        "ok": False,
        "error": "'pause': 'deadline_s' must be a whole number, not a string",
    }


@pytest.mark.parametrize(
    "req",
    [
        {"op": "status"},
        {"op": "status", "auth": "wrong"},
        {"op": "status", "auth": 5},
        {"op": "info", "auth": TOKEN},  # not a cluster-API op
        {"op": "token", "auth": TOKEN},
    ],
)
async def test_cluster_api_needs_the_token_and_serves_only_its_ops(
    tmp_path: Path, req: dict[str, Any]
) -> None:
    conn = await unix(tmp_path, server(), remote=True)
    assert await conn.ask(encode(req)) == {"ok": False, "error": "not authorized"}
    assert await conn.r.read() == b""  # and the connection is closed


async def test_cluster_api_answers_with_the_token(tmp_path: Path) -> None:
    conn = await unix(tmp_path, server(), remote=True)
    msg = await conn.ask(encode({"op": "status", "auth": TOKEN}))
    assert msg == {"ok": True, "result": {"echo": None}}


async def test_a_worker_forwards_job_ops_with_the_token(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def host(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(json.loads(await r.readline()))
        w.write(encode({"ok": True, "result": []}))
        await w.drain()
        w.close()

    host_srv = await asyncio.start_server(host, "127.0.0.1", 0)
    port = host_srv.sockets[0].getsockname()[1]
    s = ControlServer(lambda: TOKEN, forward_to=lambda: ("127.0.0.1", port))
    conn = await unix(tmp_path, s)
    assert await conn.ask(encode({"op": "jobs"})) == {"ok": True, "result": []}
    assert seen == [{"op": "jobs", "auth": TOKEN}]
    host_srv.close()


async def test_streams_end_the_connection_and_errors_are_one_line(tmp_path: Path) -> None:
    s = server()

    async def stream(req: Any, w: asyncio.StreamWriter) -> None:
        if req.source == "bad":
            raise LanrayError("no log source 'x'")
        for i in range(3):
            w.write(encode({"ok": True, "result": {"line": str(i)}}))
        w.write(encode({"end": True}))

    s.streams["logs"] = stream
    conn = await unix(tmp_path, s)
    conn.w.write(encode({"op": "logs"}))
    lines = [json.loads(x) for x in (await conn.r.read()).splitlines()]
    assert lines[-1] == {"end": True} and len(lines) == 4
    path = str(tmp_path / "s2.sock")
    await asyncio.start_unix_server(s.serve_local, path)
    r, w = await asyncio.open_unix_connection(path)
    w.write(encode({"op": "logs", "source": "bad"}))
    assert json.loads(await r.readline()) == {"ok": False, "error": "no log source 'x'"}
