"""What the host serves its members over mutual TLS, on real sockets: Ray's node rows and
running tasks for a worker's agent, a new certificate for a member that moved, and the tunnel
to Ray's dashboard on the head's loopback (``lanray-tui dashboard``)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from lanray_tui.core import tunnel
from lanray_tui.core.agent.control_server import ControlServer
from lanray_tui.core.agent.host_ray import HostRayView
from lanray_tui.core.agent.member_ops import MemberOps
from lanray_tui.core.cluster_ca import NodeTls
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.models import NodeInfo
from lanray_tui.core.protocol import DashboardRequest

NODES = [
    NodeInfo("n1", "127.0.0.1", "head", "head", "ALIVE", 2.0, 0.0, 1.5),
    NodeInfo("n2", "10.0.0.2", "w1", "worker", "ALIVE", 4.0, 1.0, 7.0),
]


class FakeRay:
    """The host's Ray, as far as these ops go (the real one needs a cluster: lab tier)."""

    def __init__(self) -> None:
        self.drained: list[str] = []

    def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
        return NODES

    def usage(self) -> dict[str, tuple[float, float]]:
        return {}

    def running_tasks(self, node_id: str) -> int:
        return {"n2": 3}.get(node_id, 0)

    def drain(self, node_id: str, deadline_s: int, reason: str) -> bool:
        self.drained.append(node_id)
        return True


@pytest.fixture
def tls(tmp_path: Path) -> tuple[NodeTls, NodeTls]:
    host = NodeTls(tmp_path / "host")
    host.ensure_ca("c0ffee", "lab")
    host.issue_own("head", ["127.0.0.1"])
    member = NodeTls(tmp_path / "member")
    member.store(host.sign(member.request("w1", ["10.0.0.2"])), host.ca_cert.read_bytes())
    return host, member


async def start_host(host: NodeTls, dashboard_port: int = 1) -> tuple[asyncio.Server, int]:
    s = ControlServer()
    members = MemberOps(FakeRay(), host)
    s.handlers.update(
        ray_nodes=members.op_ray_nodes,
        running_tasks=members.op_running_tasks,
        certify=members.op_certify,
        probe=members.op_probe,
    )

    async def dash(req: DashboardRequest, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await tunnel.serve_dashboard(r, w, dashboard_port)

    s.tunnels["dashboard"] = dash
    srv = await asyncio.start_server(s.serve_remote, "127.0.0.1", 0, ssl=host.server_context())
    return srv, srv.sockets[0].getsockname()[1]


async def test_a_worker_sees_rays_nodes_and_tasks_through_the_host(
    tls: tuple[NodeTls, NodeTls],
) -> None:
    host, member = tls
    srv, port = await start_host(host)
    local = FakeRay()
    view = HostRayView(lambda: ("127.0.0.1", port), member.client_context, local)
    assert [n.node_id for n in await asyncio.to_thread(view.nodes)] == ["n1", "n2"]
    assert await asyncio.to_thread(view.running_tasks, "n2") == 3
    assert await asyncio.to_thread(view.drain, "n2", 5, "owner") is True
    assert local.drained == ["n2"]  # drain goes to the GCS from the worker itself
    srv.close()


async def test_no_certificate_no_view(tls: tuple[NodeTls, NodeTls], tmp_path: Path) -> None:
    host, _ = tls
    srv, port = await start_host(host)
    stranger = NodeTls(tmp_path / "s")
    stranger.ensure_ca("other", "other")
    stranger.issue_own("s", ["127.0.0.1"])
    view = HostRayView(lambda: ("127.0.0.1", port), stranger.client_context, FakeRay())
    with pytest.raises(LanrayError, match="cannot ask the host"):
        await asyncio.to_thread(view.nodes)
    srv.close()


async def test_a_member_that_moved_gets_a_certificate_for_its_new_address(
    tls: tuple[NodeTls, NodeTls],
) -> None:
    from lanray_tui.core import cluster_api
    from lanray_tui.core import protocol as p

    host, member = tls
    srv, port = await start_host(host)
    assert not member.covers(["10.0.9.9"])
    csr = member.request("w1", ["10.0.9.9"])
    got = await cluster_api.ask(
        "127.0.0.1", port, p.CertifyRequest(csr=csr.decode()), member.client_context(), 5
    )
    member.store(got.cert.encode(), got.ca.encode())
    assert member.covers(["10.0.9.9"])
    with pytest.raises(LanrayError, match="certify: not a certificate signing request"):
        await cluster_api.ask(
            "127.0.0.1", port, p.CertifyRequest(csr="junk"), member.client_context(), 5
        )
    srv.close()


async def test_the_dashboard_tunnel_carries_http_to_the_heads_loopback(
    tls: tuple[NodeTls, NodeTls],
) -> None:
    host, member = tls

    async def dashboard(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await r.readuntil(b"\r\n\r\n")
        body = b"dashboard saw " + request.split(b"\r\n")[0]
        w.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await w.drain()
        w.close()

    dash = await asyncio.start_server(dashboard, "127.0.0.1", 0)
    srv, port = await start_host(host, dash.sockets[0].getsockname()[1])
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    fwd = asyncio.create_task(
        tunnel.forward_dashboard("127.0.0.1", port, member.client_context(), 0, ready.set_result)
    )
    local = await asyncio.wait_for(ready, 5)
    for _ in range(2):  # one tunnel per browser connection
        r, w = await asyncio.open_connection("127.0.0.1", local)
        w.write(b"GET /api/version HTTP/1.0\r\n\r\n")
        await w.drain()
        reply = await asyncio.wait_for(r.read(), 5)
        assert reply.endswith(b"dashboard saw GET /api/version HTTP/1.0")
        w.close()
    fwd.cancel()
    srv.close()
    dash.close()


async def test_the_tunnel_says_why_when_the_dashboard_is_down(
    tls: tuple[NodeTls, NodeTls],
) -> None:
    host, member = tls
    closed = socket_port_nobody_listens_on()
    srv, port = await start_host(host, closed)
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=member.client_context())
    w.write(b'{"op":"dashboard"}\n')
    line = await asyncio.wait_for(r.readline(), 5)
    assert b"Ray's dashboard does not answer on the head" in line
    srv.close()


def socket_port_nobody_listens_on() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_plain_client_gets_nothing_from_the_tunnel_port(tls: tuple[NodeTls, NodeTls]) -> None:
    async def main() -> bytes:
        srv, port = await start_host(tls[0])
        try:
            r, w = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl.create_default_context(cafile=str(tls[0].ca_cert))
            )
            w.write(b'{"op":"dashboard"}\n')
            return await asyncio.wait_for(r.read(), 5)
        except (ssl.SSLError, ConnectionError):
            return b""
        finally:
            srv.close()

    assert asyncio.run(main()) == b""


async def test_the_host_dials_back_only_the_asking_members_address(
    tls: tuple[NodeTls, NodeTls],
) -> None:
    from lanray_tui.core import cluster_api
    from lanray_tui.core import protocol as p

    host, member = tls
    srv, port = await start_host(host)
    listening = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    open_port = listening.sockets[0].getsockname()[1]
    closed = socket_port_nobody_listens_on()
    got = await cluster_api.ask(
        "127.0.0.1",
        port,
        p.ProbeRequest(ports=[open_port, closed, open_port]),
        member.client_context(),
        10,
    )
    assert got.address == "127.0.0.1"  # the TLS peer's address, never one it names
    assert got.ports == {str(open_port): "open", str(closed): "refused"}
    listening.close()
    srv.close()


async def test_heartbeats_keep_one_tls_connection_and_reconnect_when_it_closes(
    tls: tuple[NodeTls, NodeTls], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lanray_tui.core import cluster_api
    from lanray_tui.core import protocol as p
    from lanray_tui.core.agent import control_server

    monkeypatch.setattr(control_server, "REMOTE_READ_TIMEOUT_S", 0.3)
    host, member = tls
    srv, port = await start_host(host)
    link = cluster_api.Link(lambda: ("127.0.0.1", port), member.client_context)
    for _ in range(5):
        assert (await link.ask(p.RayNodesRequest(), 5)).nodes[0].node_id == "n1"
    assert link.connects == 1  # one handshake for five requests
    await asyncio.sleep(0.8)  # the host closes the idle connection; the link can't know
    assert (await link.ask(p.RayNodesRequest(), 5)).nodes  # sent again on a fresh one
    assert link.connects == 2
    srv.close()
    await srv.wait_closed()
    link.close()
    with pytest.raises(OSError):
        await link.ask(p.RayNodesRequest(), 2)  # nobody listens: the caller hears it
