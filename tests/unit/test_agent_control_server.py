"""Op dispatch over a real Unix socket: every malformed request shape gets one 'bad request'
line and the connection stays usable; handlers never take the server down; the cluster API
serves only its ops, and only to a peer with a certificate of the cluster; a worker forwards
the job ops to the host over the same mutual TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.core.agent.control_server import ControlServer
from lanray_tui.core.cluster_ca import NodeTls
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
    s = ControlServer()
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


@pytest.fixture
def tls(tmp_path: Path) -> tuple[NodeTls, NodeTls, NodeTls]:
    """The host's TLS, a member's and a stranger's (whose CA is another cluster's)."""
    host = NodeTls(tmp_path / "host")
    host.ensure_ca("c0ffee", "lab")
    host.issue_own("head", ["127.0.0.1"])
    member = NodeTls(tmp_path / "member")
    member.store(host.sign(member.request("w1", ["127.0.0.1"])), host.ca_cert.read_bytes())
    stranger = NodeTls(tmp_path / "stranger")
    stranger.ensure_ca("other", "other")
    stranger.issue_own("s", ["127.0.0.1"])
    return host, member, stranger


async def api(s: ControlServer, host: NodeTls) -> tuple[asyncio.Server, int]:
    srv = await asyncio.start_server(
        s.serve_remote, "127.0.0.1", 0, ssl=host.server_context(), ssl_handshake_timeout=5
    )
    return srv, srv.sockets[0].getsockname()[1]


async def test_the_cluster_api_serves_members_their_ops_only(
    tls: tuple[NodeTls, NodeTls, NodeTls],
) -> None:
    host, member, _ = tls
    srv, port = await api(server(), host)
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=member.client_context())
    conn = Conn(r, w)
    assert await conn.ask(encode({"op": "status"})) == {"ok": True, "result": {"echo": None}}
    for op in ("info", "token", "leave", "code"):  # the local user's, never a member's
        assert await conn.ask(encode({"op": op})) == {
            "ok": False,
            "error": f"'{op}' is not available here",
        }
    assert (await conn.ask(encode({"op": "status", "auth": TOKEN})))["error"] == (
        "'status' has no field 'auth'"
    )
    assert (await conn.ask(b"not json"))["ok"] is False
    assert (await conn.ask(encode({"op": "status"})))["ok"]  # still usable
    srv.close()


async def test_the_cluster_api_refuses_peers_without_a_certificate_of_the_cluster(
    tls: tuple[NodeTls, NodeTls, NodeTls],
) -> None:
    host, _, stranger = tls
    srv, port = await api(server(), host)

    async def try_with(ctx: ssl.SSLContext | None) -> bytes:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            w.write(encode({"op": "status"}))
            await w.drain()
            return await asyncio.wait_for(r.read(), 5)
        except (ssl.SSLError, ConnectionError):
            return b"refused"

    anonymous = ssl.create_default_context(cafile=str(host.ca_cert))
    assert await try_with(anonymous) in (b"", b"refused")  # TLS 1.3: refused after the hello
    assert await try_with(stranger.client_context()) == b"refused"
    plain = await try_with(None)  # plain text to a TLS port: no JSON reply, ever
    assert b"ok" not in plain
    srv.close()


async def test_a_worker_forwards_job_ops_over_tls_with_no_secret(
    tmp_path: Path, tls: tuple[NodeTls, NodeTls, NodeTls]
) -> None:
    host, member, _ = tls
    seen: list[dict[str, Any]] = []

    async def host_api(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(json.loads(await r.readline()))
        w.write(encode({"ok": True, "result": []}))
        await w.drain()
        w.close()

    host_srv = await asyncio.start_server(host_api, "127.0.0.1", 0, ssl=host.server_context())
    port = host_srv.sockets[0].getsockname()[1]
    s = ControlServer(forward_to=lambda: ("127.0.0.1", port), client_tls=member.client_context)
    conn = await unix(tmp_path, s)
    assert await conn.ask(encode({"op": "jobs"})) == {"ok": True, "result": []}
    assert seen == [{"op": "jobs"}]
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
