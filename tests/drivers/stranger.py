"""A stranger on the LAN: a lab node with no credentials that attacks a host (issue 17).

    python -m tests.drivers.stranger ATTACK ARGS...

Each attack prints one JSON line saying what happened (what it sent, what came back), for
the test to judge. It sends only to the lab addresses it is given (and the lab's broadcast
address); scapy builds the frames that raw sockets cannot (ARP).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from lanray_tui.core import beacon as wire

# ----- beacons --------------------------------------------------------------------------------


def fake_beacon(cluster_id: str, head: str) -> wire.Beacon:
    """A beacon for ``cluster_id`` naming ``head``, unsigned (also the forger's)."""
    return wire.Beacon(
        cluster_id=cluster_id,
        cluster_name="evil",
        host_name="evil",
        head_address=head,
        gcs_port=6379,
        dashboard_port=8265,
        pairing_port=47475,
        ray_version="2.60.0",
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        runtime="native",
        node_count=1,
        free_cpus=64.0,
        free_gpus=8.0,
        timestamp=time.time(),
        fingerprint="00" * 16,
    )


def beacons(host: str, broadcast: str, port: str) -> dict[str, Any]:
    """Malformed and oversized beacons and queries, to the host and to the whole lab."""
    good = wire.encode_beacon(fake_beacon("0123456789abcdef", host))
    body = json.dumps({"kind": "beacon", "cluster_id": [1] * 50, "gcs_port": -1}).encode()
    nested = b"[" * 5000 + b"]" * 5000
    packets = [
        b"",
        os.urandom(7),
        os.urandom(1200),
        os.urandom(60000),  # oversized: IP fragments
        good[:-5],  # truncated
        good[:6] + b"\xff\xff" + good[8:],  # length past the end
        wire.MAGIC + bytes([1, ord("B")]) + struct.pack(">H", len(body)) + body,
        wire.MAGIC + bytes([1, ord("B")]) + struct.pack(">H", len(nested)) + nested,
        wire.MAGIC + bytes([1, ord("Q") | 0x80]) + struct.pack(">H", 2) + b"{}" + os.urandom(32),
        good + os.urandom(60000 - len(good)),
    ]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sent = 0
    for _ in range(20):
        for pkt in packets:
            for target in (host, broadcast):
                try:
                    s.sendto(pkt, (target, int(port)))
                    sent += 1
                except OSError:
                    pass
    return {"sent": sent}


def forge(cluster_id: str, head: str, seconds: str) -> dict[str, Any]:
    """A forged host: beacons (unsigned) for the real cluster naming the real host's address,
    sent to the lab every 0.2 s, and answers to every scan query."""
    fake = wire.encode_beacon(fake_beacon(cluster_id, head))
    broadcast = head.rsplit(".", 1)[0] + ".255"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.bind(("0.0.0.0", 47474))
    s.settimeout(0.2)
    print("ready", flush=True)
    end, answered, sent, next_beacon = time.monotonic() + float(seconds), 0, 0, 0.0
    while time.monotonic() < end:
        if time.monotonic() >= next_beacon:
            s.sendto(fake, (broadcast, 47474))
            sent, next_beacon = sent + 1, time.monotonic() + 0.2
        try:
            data, peer = s.recvfrom(2048)
        except TimeoutError:
            continue
        decoded = wire.decode(data)
        if decoded is not None and decoded.kind == "query":
            s.sendto(fake, peer)
            answered += 1
    return {"sent": sent, "answered": answered}


# ----- pairing --------------------------------------------------------------------------------


def hold(host: str, port: str, count: str, seconds: str) -> dict[str, Any]:
    """``count`` connections to ``port``, each with two bytes (half a pairing frame's
    header, or of a TLS record's), held open."""
    socks, refused = [], 0
    for _ in range(int(count)):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((host, int(port)))
            s.sendall(b"\x00\x00")
            socks.append(s)
        except OSError:
            refused += 1
            s.close()
    print("holding", flush=True)
    time.sleep(float(seconds))
    open_ = 0
    for s in socks:
        s.setblocking(False)
        try:
            open_ += s.recv(1) != b""  # b"": the host closed it
        except BlockingIOError:
            open_ += 1  # nothing to read: still open
        except OSError:
            pass
        s.close()
    return {"connected": len(socks), "refused": refused, "still_open": open_}


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def _read_all(s: socket.socket, limit: float) -> bytes:
    got = bytearray()
    s.settimeout(limit)
    try:
        while chunk := s.recv(65536):
            got += chunk
    except OSError:
        pass
    return bytes(got)


def guess(host: str, port: str, wrong: str, count: str) -> dict[str, Any]:
    """A SPAKE2 message replayed, then ``count`` full exchanges with a wrong code and two with
    a made-up token."""
    from spake2 import SPAKE2_A

    from lanray_tui.core.cluster_ca import make_csr, new_key_pem
    from lanray_tui.core.pairing import PairingError, pair, pair_with_token
    from lanray_tui.core.pairing_wire import _ID_HOST, _ID_JOINER, PAIRING_VERSION, _password

    # a SPAKE2 message replayed (first, while this address may still pair at all)
    hello = {"v": PAIRING_VERSION, "mode": "code", "cluster_id": None, "node_name": "stranger"}
    msg_a = SPAKE2_A(_password("code", wrong), idA=_ID_JOINER, idB=_ID_HOST).start()
    replies = []
    for _ in range(2):  # the first is fresh, the second a replay of it
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(_frame(json.dumps(hello).encode()) + _frame(msg_a))
            s.shutdown(socket.SHUT_WR)
            replies.append(_read_all(s, 3).hex())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # UDP: sends nothing, only picks this node's address
        csr = make_csr(new_key_pem(), "stranger", [probe.getsockname()[0]])
    answers = []
    for _ in range(int(count)):
        try:
            pair(host, int(port), wrong, node_name="stranger", csr=csr, timeout=5)
            answers.append("PAIRED")
        except PairingError as exc:
            answers.append(str(exc))
    for _ in range(2):  # and in token mode, with a made-up token
        try:
            pair_with_token(host, int(port), os.urandom(32).hex(), node_name="x", csr=csr)
            answers.append("PAIRED")
        except PairingError as exc:
            answers.append(str(exc))
    return {"wrong_code_answers": answers, "replay_replies": replies}


# ----- the cluster API ------------------------------------------------------------------------


def _ask_raw(host: str, port: int, payload: bytes, wait: float = 3.0) -> bytes:
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            with contextlib.suppress(OSError):
                s.sendall(payload)
            return _read_all(s, wait)
    except OSError as exc:
        return f"<{type(exc).__name__}>".encode()


def api(host: str, port: str) -> dict[str, Any]:
    """Malformed requests to the cluster API, each on a connection of its own."""
    deep = b'{"op": ' + b"[" * 100000 + b"]" * 100000 + b"}\n"
    requests = {
        "op list": b'{"op": []}\n',
        "op object": b'{"op": {}}\n',
        "op null, auth list": b'{"op": null, "auth": []}\n',
        "deep nesting": deep,
        "huge line": b'{"op": "status", "x": "' + b"A" * (8 << 20) + b'"}\n',
        "plain text": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "binary": os.urandom(4096),
        "status, no auth": b'{"op": "status"}\n',
        "status, wrong auth": b'{"op": "status", "auth": "' + b"0" * 64 + b'"}\n',
    }
    return {name: _ask_raw(host, int(port), data).hex() for name, data in requests.items()}


def member_api(host: str, port: str, data_dir: str) -> dict[str, Any]:
    """Malformed requests from a member of the cluster (the worker: its certificate once it
    has one, else its token), one after another on one connection, then a valid ``status``
    on the same connection; and a line over the size limit on a connection of its own."""
    import ssl
    from pathlib import Path

    tls = Path(data_dir) / "tls"
    member_tls = (tls / "node.pem").is_file()
    auth = b""
    if not member_tls:
        token = json.loads((Path(data_dir) / "cluster.json").read_text())["token"]
        auth = b'"auth": "' + token.encode() + b'", '

    def connect() -> socket.socket:
        raw = socket.create_connection((host, int(port)), timeout=5)
        if not member_tls:
            return raw
        from lanray_tui.core.cluster_ca import NodeTls

        ctx: ssl.SSLContext = NodeTls(tls).client_context()
        return ctx.wrap_socket(raw, server_hostname=host)

    def line_of(s: socket.socket) -> bytes:
        got = bytearray()
        with contextlib.suppress(OSError):
            while not got.endswith(b"\n"):
                chunk = s.recv(1)
                if not chunk:
                    break
                got += chunk
        return bytes(got)

    bad = {
        "op list": b"{" + auth + b'"op": []}\n',
        "op object": b"{" + auth + b'"op": {}}\n',
        "op number": b"{" + auth + b'"op": 7}\n',
        "deep nesting": b"{" + auth + b'"op": "status", "x": ' + b"[" * 100000 + b"]" * 100000
        + b"}\n",
        "not JSON": b"hello\n",
        "not an object": b"[1, 2, 3]\n",
    }  # fmt: skip
    out: dict[str, Any] = {"member_tls": member_tls, "replies": {}}
    with connect() as s:
        for name, data in {**bad, "status_after": b"{" + auth + b'"op": "status"}\n'}.items():
            try:
                s.sendall(data)
                reply = line_of(s)[:300].decode(errors="replace")
            except OSError as exc:
                reply = f"<{type(exc).__name__}: the connection was closed>"
            if name == "status_after":
                out[name] = reply
            else:
                out["replies"][name] = reply
    with connect() as s:
        with contextlib.suppress(OSError):
            s.sendall(b"{" + auth + b'"op": "status", "x": "' + b"A" * (8 << 20) + b'"}\n')
        out["huge_line"] = line_of(s)[:200].decode(errors="replace")
    return out


def member_storage(host: str, port: str, data_dir: str, rounds: str = "3") -> dict[str, Any]:
    """A member writes and reads the cluster storage: each round on a new connection; the
    seconds each round took, or the first error."""
    from pathlib import Path

    from lanray_tui.storage_fs import ClusterFS, errors

    took: list[float] = []
    for i in range(int(rounds)):
        t0 = time.monotonic()
        try:
            fs = ClusterFS(f"webdavs://{host}:{port}/", tls_dir=str(Path(data_dir) / "tls"))
            fs.pipe_file(f"jobs/j-member/{i}", b"member")
            if fs.cat_file(f"jobs/j-member/{i}") != b"member":
                return {"took_s": took, "error": "read back something else"}
        except errors() as exc:
            return {"took_s": took, "error": f"{type(exc).__name__}: {exc}"}
        took.append(round(time.monotonic() - t0, 3))
    return {"took_s": took, "error": None}


def replay(host: str, port: str, path: str) -> dict[str, Any]:
    """A worker's recorded bytes to the cluster API, sent again from here."""
    with open(path, "rb") as f:
        data = f.read()
    return {"sent": len(data), "reply": _ask_raw(host, int(port), data).hex()}


# ----- Ray and the Jobs API -------------------------------------------------------------------


def ray_ports(host: str, token: str, ports: str) -> dict[str, Any]:
    """A Ray client with the token and no certificate: Ray's GCS asked for the cluster id
    (the first thing every Ray client asks), and each gRPC port tried in plain text."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    gcs = ports.split(",")[0]
    out: dict[str, Any] = {}
    with grpc.insecure_channel(f"{host}:{gcs}") as ch:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(ch)
        try:
            reply = stub.GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=5,
            )
            out["gcs_cluster_id"] = reply.cluster_id.hex()
        except grpc.RpcError as exc:
            out["gcs_refused"] = f"{exc.code().name}: {exc.details()}"
    channels = {port: grpc.insecure_channel(f"{host}:{port}") for port in ports.split(",")}
    futures = {port: grpc.channel_ready_future(ch) for port, ch in channels.items()}
    deadline = time.monotonic() + 4
    ready = {}
    for port, future in futures.items():  # all at once: each has until the one deadline
        try:
            future.result(timeout=max(0.1, deadline - time.monotonic()))
            ready[port] = True
        except grpc.FutureTimeoutError:
            ready[port] = False
    for ch in channels.values():
        ch.close()
    out["plain_grpc_ready"] = ready
    return out


def http(url: str, token: str) -> dict[str, Any]:
    """One Jobs API request (with the token): what, if anything, answers."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return {"answer": r.status}
    except urllib.error.HTTPError as exc:
        return {"answer": exc.code}
    except (OSError, urllib.error.URLError) as exc:
        return {"no_answer": str(getattr(exc, "reason", exc))}


# ----- ARP ------------------------------------------------------------------------------------


def arp(host_ip: str, host_mac: str, victim_ip: str, victim_mac: str, seconds: str) -> dict:
    """Gratuitous ARP telling the victim that the host's address is at this node, for
    ``seconds``, while this node takes the host's address and accepts connections to the
    cluster API port as the host would (reading, never answering). Every IPv4 frame that
    reaches this node meanwhile goes to the pcap file named by $STRANGER_PCAP. Then the truth
    again, so that the victim finds its host."""
    import subprocess
    import threading

    from scapy.all import ARP, Ether, conf, get_if_hwaddr, sendp  # noqa: TID251

    conf.verb = 0
    me = get_if_hwaddr("eth0")
    lies = [
        Ether(src=me, dst=victim_mac) / ARP(op=2, hwsrc=me, psrc=host_ip, hwdst=victim_mac,
                                            pdst=victim_ip),
        Ether(src=me, dst=victim_mac) / ARP(op=1, hwsrc=me, psrc=host_ip, hwdst="00:00:00:00:00:00",
                                            pdst=host_ip),
    ]  # fmt: skip
    truth = Ether(src=me, dst=victim_mac) / ARP(
        op=1, hwsrc=host_mac, psrc=host_ip, hwdst="00:00:00:00:00:00", pdst=host_ip
    )
    subprocess.run(["ip", "addr", "add", f"{host_ip}/32", "dev", "eth0"], check=True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host_ip, int(os.environ.get("STRANGER_API_PORT", "47476"))))
    listener.listen(64)
    listener.settimeout(0.1)
    received = bytearray()
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            received.extend(_read_all(conn, 0.5))
            conn.close()

    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
    sniff.bind(("eth0", 0))
    sniff.settimeout(0.05)
    acceptor = threading.Thread(target=accept)
    acceptor.start()
    frames: list[bytes] = []
    end = time.monotonic() + float(seconds)
    next_lie = 0.0
    try:
        while time.monotonic() < end:
            if time.monotonic() >= next_lie:
                sendp(lies, iface="eth0")
                next_lie = time.monotonic() + 0.25
            try:
                data, addr = sniff.recvfrom(262144)
            except TimeoutError:
                continue
            if addr[2] != socket.PACKET_OUTGOING:
                frames.append(data)
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        subprocess.run(["ip", "addr", "del", f"{host_ip}/32", "dev", "eth0"], check=False)
        for _ in range(3):
            sendp(truth, iface="eth0")
            time.sleep(0.2)
    with open(os.environ["STRANGER_PCAP"], "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for frame in frames:
            f.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)
    victim, host = socket.inet_aton(victim_ip), socket.inet_aton(host_ip)
    to_host = [f for f in frames if f[26:30] == victim and f[30:34] == host]
    return {"frames": len(frames), "victim_to_host": len(to_host), "accepted": len(received)}


ATTACKS: dict[str, Callable[..., dict[str, Any]]] = {
    "beacons": beacons,
    "forge": forge,
    "hold": hold,
    "guess": guess,
    "api": api,
    "member_api": member_api,
    "member_storage": member_storage,
    "replay": replay,
    "ray_ports": ray_ports,
    "http": http,
    "arp": arp,
}

if __name__ == "__main__":
    print(json.dumps(ATTACKS[sys.argv[1]](*sys.argv[2:])), flush=True)
