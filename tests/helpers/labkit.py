"""Running lanray-tui on lab nodes from tests and benchmarks."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
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


# ----- what crosses the lab's wire (issue 17) ---------------------------------------------------


def data_dir(node: Node) -> Path:
    """The node's ``$XDG_DATA_HOME/lanray-tui`` (credentials, and ``tls/`` once it has one)."""
    return node.lab.node(node.name).root / "home/.local/share/lanray-tui"


def agent_log(node: Node) -> Path:
    return node.lab.node(node.name).root / "home/.local/state/lanray-tui/agent.log"


def mac_of(node: Node) -> str:
    """The MAC address of the node's ``eth0``."""
    p = node.run(["ip", "-j", "link", "show", "dev", "eth0"], check=True, timeout=30)
    return str(json.loads(p.stdout)[0]["address"])


def node_secrets(node: Node) -> dict[str, bytes]:
    """Everything secret the node holds, in the forms it could cross a wire in: the cluster
    token and key (hex text and raw bytes), and every private key under its ``tls/`` dir (each
    line of its PEM text, its DER bytes and its private scalar, raw and in hex)."""
    out: dict[str, bytes] = {}
    where = f"{node.name}:"
    creds_file = data_dir(node) / "cluster.json"
    if creds_file.exists():
        creds = json.loads(creds_file.read_text())
        for field in ("token", "cluster_key"):
            text = str(creds.get(field) or "")
            if not text:
                continue
            out[f"{where}{field} (hex)"] = text.encode()
            with contextlib.suppress(ValueError):
                out[f"{where}{field} (raw bytes)"] = bytes.fromhex(text)
    tls = data_dir(node) / "tls"
    for key_file in sorted(tls.glob("*.key")) if tls.is_dir() else []:
        pem = key_file.read_bytes()
        name = f"{where}tls/{key_file.name}"
        out[f"{name} (PEM)"] = pem
        body = [ln for ln in pem.splitlines() if ln and not ln.startswith(b"-----")]
        for i, line in enumerate(body):
            if len(line) >= 16:
                out[f"{name} (PEM line {i + 1})"] = line
        out[f"{name} (DER)"] = base64.b64decode(b"".join(body))
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_private_key(pem, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            scalar = key.private_numbers().private_value.to_bytes(32, "big")
            out[f"{name} (private scalar)"] = scalar
            out[f"{name} (private scalar, hex)"] = scalar.hex().encode()
    return out


def base64_forms(needle: bytes) -> list[bytes]:
    """The parts of ``needle``'s base64 text that do not depend on what surrounds it, at each
    of the three alignments it can have in a longer base64 text."""
    forms = []
    for pad in range(3):
        text = base64.b64encode(bytes(pad) + needle)
        first, end = -(-8 * pad // 6), 8 * (pad + len(needle)) // 6
        if end - first >= 8:
            forms.append(text[first:end])
    return forms


class BridgeCapture:
    """Every frame that enters the lab's bridge, written to a pcap file.

    A thread enters the bridge's network namespace and reads one packet socket on all its
    ports: each frame a node sends enters the bridge once, through that node's port, so
    keeping only what the ports receive (not what they send on, nor the bridge's own copy)
    records each frame exactly once. ``drops`` is what the kernel could not hand over."""

    def __init__(self, lab: labmod.Lab, path: Path) -> None:
        self.lab = lab
        self.path = path
        self.frames = 0
        self.drops = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-capture", daemon=True)

    def __enter__(self) -> BridgeCapture:
        self._thread.start()
        self._ready.wait(10)
        if self.error is not None:
            raise AssertionError(f"the capture did not start: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            time.sleep(0.3)  # the last frames of what the caller just did
            self._stop.set()
            self._thread.join(10)

    def _run(self) -> None:
        try:
            _enter_netns(self.lab.bridge_netns)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            return
        with sock, open(self.path, "wb") as out:
            sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: 64 MiB
            sock.settimeout(0.2)
            out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, _SNAPLEN, 1))
            self._ready.set()
            while not self._stop.is_set():
                try:
                    data, addr = sock.recvfrom(_SNAPLEN)
                except TimeoutError:
                    continue
                if addr[0] == "br0" or addr[2] == socket.PACKET_OUTGOING:
                    continue
                now = time.time()
                sec, usec = int(now), int((now % 1) * 1e6)
                out.write(struct.pack("<IIII", sec, usec, len(data), len(data)) + data)
                self.frames += 1
            # struct tpacket_stats {packets, drops}; reading it resets it
            stats = sock.getsockopt(263, 6, 8)  # SOL_PACKET, PACKET_STATISTICS
            self.drops = struct.unpack("II", stats)[1]


_SNAPLEN = 262144


def _enter_netns(name: str) -> None:
    """Move the calling thread (only it) into network namespace ``name``."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{name}") as ns:
        if libc.setns(ns.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns into {name}")


@dataclass
class Stream:
    """The payload one side of one TCP connection sent, in order."""

    src: str
    sport: int
    dst: str
    dport: int
    syn: bool  # the capture saw the connection open
    data: bytearray = field(default_factory=bytearray)
    _isn: int | None = None
    _segments: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"tcp {self.src}:{self.sport} -> {self.dst}:{self.dport}"


def read_pcap(path: Path) -> list[bytes]:
    """The frames of a pcap file that :class:`BridgeCapture` wrote."""
    raw = path.read_bytes()
    frames, at = [], 24
    while at + 16 <= len(raw):
        n = struct.unpack_from("<IIII", raw, at)[2]
        frames.append(raw[at + 16 : at + 16 + n])
        at += 16 + n
    return frames


def tcp_streams(frames: list[bytes]) -> list[Stream]:
    """Each side of each TCP connection in ``frames``, reassembled by sequence number
    (retransmissions and overlaps once; a new SYN on the same ports starts a new stream)."""
    streams: list[Stream] = []
    current: dict[tuple[str, int, str, int], Stream] = {}
    for frame in frames:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0] or len(ip)
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack_from("!HHI", tcp)
        offset, flags = (tcp[12] >> 4) * 4, tcp[13]
        key = (src, sport, dst, dport)
        stream = current.get(key)
        if flags & 0x02 or stream is None:  # SYN, or the first we see of it
            stream = Stream(src, sport, dst, dport, syn=bool(flags & 0x02))
            stream._isn = (seq + 1) if flags & 0x02 else seq
            current[key] = stream
            streams.append(stream)
        payload = bytes(tcp[offset:])
        if payload:
            stream._segments.append(((seq - (stream._isn or 0)) % (1 << 32), payload))
    for stream in streams:
        for rel, payload in sorted(stream._segments, key=lambda s: s[0]):
            have = len(stream.data)
            if rel + len(payload) > have:
                stream.data += payload[max(0, have - rel) :]
        stream._segments.clear()
    return streams


def zip_members(data: bytes) -> list[bytes]:
    """The contents of the zip entries whose local headers appear in ``data`` (stored as is,
    or deflated), as far as ``data`` holds them."""
    out = []
    at = data.find(b"PK\x03\x04")
    while at >= 0:
        with contextlib.suppress(struct.error, zlib.error):
            method, size = struct.unpack_from("<H", data, at + 8)[0], 0
            size = struct.unpack_from("<I", data, at + 18)[0]
            name_len, extra_len = struct.unpack_from("<HH", data, at + 26)
            start = at + 30 + name_len + extra_len
            body = data[start : start + size] if size else data[start : start + (1 << 20)]
            if method == 8:
                out.append(zlib.decompressobj(-15).decompress(body))
            elif method == 0:
                out.append(body)
        at = data.find(b"PK\x03\x04", at + 4)
    return out


def find_secrets(pcap: Path, secrets: dict[str, bytes]) -> list[str]:
    """Where each secret shows in the capture: in its raw bytes (every frame as sent), in any
    reassembled TCP stream, in a zip entry carried by one, and as base64 text in either.

    One line per secret found (secrets of equal value share it), naming the places: "raw
    capture" and the TCP streams it is in (counted by the port they went to, with the first
    one of each port spelled out). An empty list means none of them is anywhere."""
    raw = pcap.read_bytes()
    streams = tcp_streams(read_pcap(pcap))
    places: list[tuple[str, Stream | None, bytes]] = [("raw capture", None, raw)]
    for s in streams:
        places.append((s.name, s, bytes(s.data)))
        places += [(f"{s.name}, a zip entry", s, m) for m in zip_members(bytes(s.data))]
    names: dict[bytes, list[str]] = {}
    for what, needle in secrets.items():
        if needle:
            names.setdefault(needle, []).append(what)
    found = []
    for needle, whats in names.items():
        forms = [("", needle)] + [(" as base64", f) for f in base64_forms(needle)]
        hits: list[str] = []
        ports: dict[int, list[int]] = {}  # port: ids of the streams to it that hold it
        for where, stream, data in places:
            for how, form in forms:
                at = data.find(form)
                if at >= 0:
                    seen = ports.setdefault(stream.dport, []) if stream else []
                    if stream is None or not seen:
                        hits.append(f"{where}{how} at byte {at}")
                    if stream is not None and id(stream) not in seen:
                        seen.append(id(stream))
                    break
        if hits:
            counts = ", ".join(f":{p} x{len(ids)}" for p, ids in sorted(ports.items()))
            note = f" [streams to {counts}]" if counts else ""
            found.append(f"{' = '.join(whats)}{note}: " + "; ".join(hits))
    return found
