"""Storage benchmark: the cluster storage's throughput between two lab nodes, next to a
plain TCP copy of the same file between the same two nodes.

In a 2-node lab (n1 hosts, n2 joined), n2 writes a file of --mb MB to the host's storage and
reads it back (webdav4's fsspec client over TLS with n2's certificate, WsgiDAV in cheroot on
n1, as jobs and `lanray-tui results` use it), and copies the same file to and from a plain
TCP server on n1 (no TLS, no HTTP: `socket.sendfile` on one side, 1 MiB reads written to a
file on the other), and inside bare TLS with the same certificates (1 MiB blocks, no HTTP:
what any encrypted channel costs in Python here). Each copy ends when the receiver has
written the whole file; the runs are interleaved, and the medians are reported in MB/s
(1 MB = 10^6 bytes).

    python bench/storage.py [--mb N] [--runs N] [--link-mbit N] [--json]

The lab's cables have no speed of their own: both copies are then bound by this machine's
CPUs (TLS, HTTP and Python on one side, a kernel copy on the other). --link-mbit N gives
n1's and n2's cables the speed of a LAN (a token bucket on the bridge side of each, so both
directions), as between two real machines.

JSON keys: storage_write_mb_s, storage_read_mb_s, tcp_write_mb_s, tcp_read_mb_s, and the
ratios write_ratio and read_ratio (storage over TCP; the goal is >= 0.7); tls_write_mb_s,
tls_read_mb_s, and write_ratio_to_tls and read_ratio_to_tls (storage over bare TLS: what
HTTP and WebDAV cost on top of the encryption).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

from _common import (
    LANRAY,
    bench_lab,
    checked,
    host_on_n1,
    last_json,
    median,
    on_node,
    report,
    settle,
)

INSIDE = os.path.abspath(__file__)
TCP_PORT = 47490
CHUNK = 1 << 20


# ----- what runs inside the lab nodes ---------------------------------------------------------


def node_tls() -> Any:
    """This lab node's certificate, key and CA (its agent's TLS folder)."""
    from lanray_tui.core.cluster_ca import NodeTls
    from lanray_tui.core.paths import Paths

    return NodeTls(Paths.from_env().tls_dir)


def tcp_server(host: str, port: int, src: str, sink: str) -> None:
    """n1, forever: 'W' receives into ``sink`` (then answers b'k'), 'R' sends ``src``; 'w'
    and 'r' the same inside TLS with the cluster's certificates (1 MiB blocks each way)."""
    srv = socket.create_server((host, port), reuse_port=True)
    tls = node_tls().server_context()
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            mode = conn.recv(1)
            if mode == b"W":
                with open(sink, "wb") as f:
                    while chunk := conn.recv(CHUNK):
                        f.write(chunk)
                conn.sendall(b"k")
            elif mode == b"R":
                with open(src, "rb") as f:
                    conn.sendfile(f)
            elif mode in (b"w", b"r"):
                with tls.wrap_socket(conn, server_side=True) as sconn:
                    if mode == b"w":
                        size = int.from_bytes(exactly(sconn, 8), "big")
                        receive(sconn, sink, size)
                        sconn.sendall(b"k")
                    else:
                        with open(src, "rb") as f:
                            while block := f.read(CHUNK):
                                sconn.sendall(block)


def receive(conn: socket.socket, dest: str, size: int = -1) -> None:
    """Into ``dest``: ``size`` bytes, or until the sender closes; one 1 MiB buffer."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    left = size if size >= 0 else 1 << 62
    with open(dest, "wb") as f:
        while left:
            try:
                n = conn.recv_into(view[: min(CHUNK, left)])
            except ssl.SSLEOFError:
                n = 0
            if not n:
                break
            f.write(view[:n])
            left -= n


def exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            raise ConnectionError("closed early")
        data += more
    return data


def tcp_copy(host: str, port: int, mode: str, src: str, dest: str) -> float:
    t0 = time.perf_counter()
    with socket.create_connection((host, port)) as conn:
        conn.sendall(mode.encode())
        if mode == "W":
            with open(src, "rb") as f:
                conn.sendfile(f)
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(1) == b"k"
        else:
            with open(dest, "wb") as f:
                while chunk := conn.recv(CHUNK):
                    f.write(chunk)
    return time.perf_counter() - t0


def tls_copy(host: str, port: int, mode: str, src: str, dest: str) -> float:
    """The same copy inside TLS ('w' or 'r'): what any encrypted channel in Python costs
    here, with no HTTP and no WebDAV."""
    context = node_tls().client_context()
    t0 = time.perf_counter()
    with socket.create_connection((host, port)) as raw:
        raw.sendall(mode.encode())
        with context.wrap_socket(raw, server_hostname=host) as conn:
            if mode == "w":
                conn.sendall(os.path.getsize(src).to_bytes(8, "big"))
                with open(src, "rb") as f:
                    while block := f.read(CHUNK):
                        conn.sendall(block)
                assert conn.recv(1) == b"k"
            else:
                receive(conn, dest)
    return time.perf_counter() - t0


def client(host: str, storage_port: int, src: str, runs: int) -> None:
    """n2: the copies, interleaved; prints the seconds of each as JSON."""
    from lanray_tui.storage_fs import ClusterFS

    fs = ClusterFS(f"webdavs://{host}:{storage_port}/")
    fs.ls("")  # the connection and the server's feature check, as a job's first call does
    back = src + ".back"
    keys = ("dav_w", "dav_r", "tcp_w", "tcp_r", "tls_w", "tls_r")
    times: dict[str, list[float]] = {k: [] for k in keys}
    size = os.path.getsize(src)
    for _ in range(runs):
        times["tcp_w"].append(tcp_copy(host, TCP_PORT, "W", src, ""))
        t0 = time.perf_counter()
        fs.put_file(src, "bench/file.bin")
        times["dav_w"].append(time.perf_counter() - t0)
        times["tls_w"].append(tls_copy(host, TCP_PORT, "w", src, ""))
        times["tcp_r"].append(tcp_copy(host, TCP_PORT, "R", "", back))
        assert os.path.getsize(back) == size
        times["tls_r"].append(tls_copy(host, TCP_PORT, "r", "", back))
        assert os.path.getsize(back) == size
        t0 = time.perf_counter()
        fs.get_file("bench/file.bin", back)
        times["dav_r"].append(time.perf_counter() - t0)
        assert os.path.getsize(back) == size
    fs.rm("bench", recursive=True)
    print(json.dumps(times))


# ----- the benchmark --------------------------------------------------------------------------


def shape(lab: object, node: str, mbit: int) -> None:
    """A token bucket of ``mbit`` on the bridge side of ``node``'s cable (traffic to it)."""
    veth = lab.node(node).name  # type: ignore[attr-defined]
    netns = lab.bridge_netns  # type: ignore[attr-defined]
    tbf = f"tc qdisc replace dev {veth} root tbf rate {mbit}mbit burst 256kb latency 50ms"
    subprocess.run(["ip", "netns", "exec", netns, *tbf.split()], check=True)


def measure(lab: Any, mb: int, runs: int) -> dict[str, Any]:
    """The copies between n2 and n1 of ``lab``, where n1 hosts and n2 is joined: storage
    and plain TCP, ``runs`` of each way, of a file of ``mb`` MB. Returns the figures."""
    from lanray_tui.core import lab as labmod

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="lanray-bench-storage-") as tmp:
        os.chmod(tmp, 0o755)
        src, sink = os.path.join(tmp, "file.bin"), os.path.join(tmp, "sink.bin")
        with open(src, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1_000_000))
        host = lab.node("n1").address
        server = labmod.run(
            lab,
            "n1",
            [py, INSIDE, "--tcp-server", host, str(TCP_PORT), src, sink],
            text=True,
            stdout=subprocess.PIPE,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            out = checked(
                on_node(lab, "n2", [py, INSIDE, "--client", host, "47477", src, str(runs)],
                        timeout=600),
                "the copies",
            )  # fmt: skip
        finally:
            server.kill()
            server.wait()
    times = last_json(out)

    def rate(key: str) -> float:
        return round(mb / median(times[key]), 1)

    result: dict[str, Any] = {
        "file_mb": mb,
        "runs": runs,
        "storage_write_mb_s": rate("dav_w"),
        "storage_read_mb_s": rate("dav_r"),
        "tcp_write_mb_s": rate("tcp_w"),
        "tcp_read_mb_s": rate("tcp_r"),
        "tls_write_mb_s": rate("tls_w"),
        "tls_read_mb_s": rate("tls_r"),
    }
    result["write_ratio"] = round(result["storage_write_mb_s"] / result["tcp_write_mb_s"], 2)
    result["read_ratio"] = round(result["storage_read_mb_s"] / result["tcp_read_mb_s"], 2)
    for way in ("write", "read"):  # the storage next to a bare TLS copy
        ratio = result[f"storage_{way}_mb_s"] / result[f"tls_{way}_mb_s"]
        result[f"{way}_ratio_to_tls"] = round(ratio, 2)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="file size in MB (default 100)")
    ap.add_argument("--runs", type=int, default=3, help="copies each way (default 3)")
    ap.add_argument("--link-mbit", type=int, default=0, help="cable speed (default: unlimited)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    with bench_lab("stor2", 2) as lab:
        if args.link_mbit:
            for node in ("n1", "n2"):
                shape(lab, node, args.link_mbit)
        join = host_on_n1(lab, 1)
        try:
            checked(on_node(lab, "n2", join), "join")
            settle()  # n2's Ray is still starting its agents: not what is measured
            figures = measure(lab, args.mb, args.runs)
        finally:
            for node in ("n2", "n1"):
                on_node(lab, node, [*LANRAY, "leave"], timeout=120)
    result = {
        "file_mb": figures["file_mb"],
        "runs": figures["runs"],
        "link_mbit": args.link_mbit or None,
        **{k: v for k, v in figures.items() if k not in ("file_mb", "runs")},
    }
    report(result, args.json)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tcp-server":
        tcp_server(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(main())
