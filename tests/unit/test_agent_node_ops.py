"""The host's status rows: one per machine, withheld nodes say why instead of DEAD."""

from __future__ import annotations

from lanray_tui.core.agent.node_ops import NodeOps, fold
from lanray_tui.core.agent.state import NodeState, Role
from lanray_tui.core.cluster_api import HeartbeatBook
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.models import NodeInfo


def node(nid: str, ip: str, state: str, role: str = "worker") -> NodeInfo:
    return NodeInfo(nid, ip, ip, role, state, 1.0, 0.0, 1.0)


def ops(book: HeartbeatBook) -> NodeOps:
    me = NodeState(role=Role.HOST, creds=Credentials.new("t"), node_ip="10.0.0.1")
    return NodeOps(me, None, {}, dict, dict, lambda: None, book)  # type: ignore[arg-type]


def test_fold_keeps_one_row_per_machine_and_counts_earlier_nodes() -> None:
    rows = fold(
        [
            node("a1", "10.0.0.2", "DEAD"),
            node("a2", "10.0.0.2", "ALIVE"),
            node("a3", "10.0.0.2", "DEAD"),
            node("b1", "10.0.0.3", "DEAD"),
            node("h", "10.0.0.1", "ALIVE", "head"),
        ]
    )
    assert [(n.node_id, k) for n, k in rows] == [("a2", 2), ("b1", 0), ("h", 0)]


def beat(book: HeartbeatBook, ip: str, state: str, lending: dict[str, str]) -> None:
    book.record({"node_ip": ip, "name": "n2", "state": state, "lending": lending})


def test_a_paused_node_is_withheld_with_its_reason_not_dead() -> None:
    book = HeartbeatBook(1.0, 3)
    beat(book, "10.0.0.2", "paused", {"state": "paused", "reason": "paused by hand"})
    view = ops(book).node_view(node("a1", "10.0.0.2", "DEAD"), 1)
    assert view["state"] == "WITHHELD" and view["link"] == "UP"
    assert view["lending"] == {"state": "paused", "reason": "paused by hand"}
    assert view["ray_restarts"] == 1


def test_a_restarting_node_says_so_and_a_silent_one_is_dead() -> None:
    book = HeartbeatBook(1.0, 3)
    beat(book, "10.0.0.2", "restarting", {"state": "lending", "reason": "lent"})
    assert ops(book).node_view(node("a1", "10.0.0.2", "DEAD"))["state"] == "RESTARTING"
    book.beats["10.0.0.2"].received -= 10  # it stopped beating
    view = ops(book).node_view(node("a1", "10.0.0.2", "DEAD"))
    assert view["state"] == "DEAD" and view["link"] == "n/a" and view["lending"] == {}


def test_a_left_node_is_dead_at_once() -> None:
    book = HeartbeatBook(1.0, 3)
    beat(book, "10.0.0.2", "stopping", {"state": "lending", "reason": "lent"})
    assert ops(book).node_view(node("a1", "10.0.0.2", "DEAD"))["state"] == "DEAD"


async def test_status_answers_while_rays_view_is_not_available() -> None:
    from lanray_tui.core import protocol as p
    from lanray_tui.core.errors import LanrayError

    class Down:
        def nodes(self, timeout: float = 5.0) -> list[NodeInfo]:
            raise LanrayError("cannot reach the Ray dashboard at http://10.0.0.1:8265: refused")

    o = ops(HeartbeatBook(1.0, 3))
    o.ray = Down()  # type: ignore[assignment]
    got = await o.op_status(p.StatusRequest())
    assert got.nodes == [] and got.agent.role == "host"
    assert got.note.startswith("Ray's view of the nodes is not available: cannot reach")
    assert p.StatusReply.from_json(got.to_json()).note == got.note
