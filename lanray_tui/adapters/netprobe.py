"""What the network doctor asks of the operating system: TCP dials, temporary listeners, ICMP
echoes with the don't-fragment bit, UDP broadcast listening, interface kinds and MTUs, and
which firewall tool this machine uses.

Every probe here goes only to the address it is given (the doctor gives the head's): nothing
is broadcast or swept. Each one degrades to a reason instead of raising.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import nftables

SYS_NET = Path("/sys/class/net")
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python does not export it
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
_ICMP_ECHO, _ICMP_ECHO_REPLY = 8, 0
IP_ICMP_HEADERS = 28  # a ping of N payload bytes is an N + 28 byte IP packet


# ----- TCP -----------------------------------------------------------------------------------


def dial(address: str, port: int, timeout: float = 1.5) -> str:
    """One TCP connect: ``open``, ``refused`` (reached, nothing listens), ``timeout``
    (dropped on the way) or ``error: ...`` (e.g. no route)."""
    try:
        with socket.create_connection((address, port), timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"


def dial_many(address: str, ports: Iterable[int], timeout: float = 1.5) -> dict[int, str]:
    """:func:`dial` on each port at once (a dropped port costs ``timeout``, not one each)."""
    wanted = list(dict.fromkeys(ports))
    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(wanted))) as pool:
        results = pool.map(lambda p: dial(address, p, timeout), wanted)
        return dict(zip(wanted, results, strict=True))


class Listeners:
    """Temporary TCP listeners on ``address``, one per port, accepting and closing at once,
    so that a dial-back that reaches this node finds something listening ("open").

    Ports already taken (a running Ray holds them) are left alone: :attr:`taken` lists them.
    """

    def __init__(self, address: str, ports: Iterable[int]) -> None:
        self.address = address
        self.listening: list[int] = []
        self.taken: list[int] = []
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for port in dict.fromkeys(ports):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # A port this very doctor listened on a moment ago still has connections in
                # TIME_WAIT; a port something else listens on (Ray) still fails to bind.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port))
                s.listen(16)
                s.setblocking(False)
            except OSError:
                s.close()
                self.taken.append(port)
                continue
            self._socks.append(s)
            self.listening.append(port)

    def __enter__(self) -> Listeners:
        self._thread = threading.Thread(target=self._accept, name="doctor-listen", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set() and self._socks:
            ready, _, _ = select.select(self._socks, [], [], 0.1)
            for s in ready:
                with contextlib.suppress(OSError):
                    conn, _ = s.accept()
                    conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        for s in self._socks:
            s.close()
        self._socks = []


# ----- interfaces ----------------------------------------------------------------------------


def interface_kind(name: str, root: Path = SYS_NET) -> str:
    """``wifi``, ``vpn``, ``bridge``, ``loopback`` or ``wired`` (what sysfs says ``name`` is)."""
    d = root / name
    if name == "lo":
        return "loopback"
    if (d / "wireless").exists() or (d / "phy80211").exists():
        return "wifi"
    if (
        name.startswith(("tun", "tap", "wg", "ppp", "tailscale", "zt"))
        or (d / "tun_flags").exists()
    ):
        return "vpn"
    if name.startswith(("docker", "br-", "virbr", "veth", "cni")) or (d / "bridge").exists():
        return "bridge"
    return "wired"


def mtu(name: str, root: Path = SYS_NET) -> int | None:
    """The MTU sysfs gives ``name``; None when it cannot be read."""
    try:
        return int((root / name / "mtu").read_text().strip())
    except (OSError, ValueError):
        return None


# ----- ICMP echo -----------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class Pinger:
    """ICMP echo to one address with the don't-fragment bit set.

    Uses the unprivileged ICMP socket where ``net.ipv4.ping_group_range`` allows it, else a
    raw socket (root or CAP_NET_RAW); :attr:`problem` says why neither is possible.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.problem = ""
        self.raw = False
        self._ident = os.getpid() & 0xFFFF
        self._seq = 0
        self.sock: socket.socket | None = None
        for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
            try:
                s = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
            except OSError:
                continue
            s.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
            self.sock, self.raw = s, kind == socket.SOCK_RAW
            break
        if self.sock is None:
            self.problem = "ICMP echo needs root, CAP_NET_RAW or net.ipv4.ping_group_range"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, payload: int) -> int | str:
        """Send one echo of ``payload`` bytes: its sequence number, or ``too big`` (the
        kernel refuses it unfragmented: larger than the interface or a known path MTU)."""
        assert self.sock is not None
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        body = bytes(payload)
        header = struct.pack("!BBHHH", _ICMP_ECHO, 0, 0, self._ident, seq)
        packet = struct.pack("!BBHHH", _ICMP_ECHO, 0, _checksum(header + body), self._ident, seq)
        try:
            self.sock.sendto(packet + body, (self.address, 0))
        except OSError as exc:
            return "too big" if exc.errno == errno.EMSGSIZE else -1
        return seq

    def _collect(self, wanted: set[int], deadline: float) -> tuple[set[int], bool]:
        """The sequence numbers in ``wanted`` that got a reply before ``deadline``, and
        whether the kernel reported a packet too big on the way."""
        assert self.sock is not None
        got: set[int] = set()
        too_big = False
        while wanted - got and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            try:
                data, (src, _) = self.sock.recvfrom(65535)
            except OSError as exc:
                too_big = too_big or exc.errno == errno.EMSGSIZE
                continue
            if self.raw:
                data = data[(data[0] & 0x0F) * 4 :]  # a raw socket hands the IP header too
            if src != self.address or len(data) < 8:
                continue
            kind, _, _, ident, seq = struct.unpack("!BBHHH", data[:8])
            # The kernel rewrites the ident of an unprivileged ICMP socket: match on seq.
            if kind == _ICMP_ECHO_REPLY and (ident == self._ident or not self.raw):
                got.add(seq)
        return got & wanted, too_big

    def echo(self, payload: int, timeout: float) -> str:
        """One echo of ``payload`` bytes: ``reply``, ``lost`` or ``too big``."""
        seq = self._send(payload)
        if seq == "too big":
            return "too big"
        if not isinstance(seq, int) or seq < 0:
            return "lost"
        got, too_big = self._collect({seq}, time.monotonic() + timeout)
        if got:
            return "reply"
        return "too big" if too_big else "lost"

    def loss(self, count: int, payload: int = 56, timeout: float = 1.0, gap: float = 0.01) -> int:
        """How many of ``count`` echoes (sent ``gap`` apart) got no reply within ``timeout``
        of the last one."""
        sent: set[int] = set()
        for _ in range(count):
            seq = self._send(payload)
            if isinstance(seq, int) and seq >= 0:
                sent.add(seq)
            time.sleep(gap)
        got, _ = self._collect(sent, time.monotonic() + timeout)
        return count - len(got)

    def fits(self, packet_size: int, tries: int, timeout: float) -> bool:
        """Whether an unfragmented IP packet of ``packet_size`` bytes gets through."""
        payload = max(0, packet_size - IP_ICMP_HEADERS)
        for _ in range(tries):
            got = self.echo(payload, timeout)
            if got == "reply":
                return True
            if got == "too big":
                return False
        return False

    def path_mtu(self, ceiling: int, floor: int = 576, timeout: float = 0.5) -> int | None:
        """The largest packet that gets through unfragmented, between ``floor`` and
        ``ceiling`` (the interface MTU); None when not even ``floor`` does."""
        if self.fits(ceiling, 5, timeout):
            return ceiling
        if not self.fits(floor, 5, timeout):
            return None
        lo, hi = floor, ceiling  # lo fits, hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.fits(mid, 3, timeout):
                lo = mid
            else:
                hi = mid
        return lo


# ----- UDP broadcast -------------------------------------------------------------------------


@dataclass(frozen=True)
class Datagram:
    data: bytes
    source: str
    destination: str  # the packet's own destination address (a broadcast one, or ours)


def listen_udp(port: int, seconds: float, source: str) -> tuple[list[Datagram], str]:
    """Datagrams from ``source`` to UDP ``port`` during ``seconds`` (sends nothing), with each
    one's destination address; or ([], why) when the port cannot be bound."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out: list[Datagram] = []
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        s.bind(("0.0.0.0", port))
    except OSError as exc:
        s.close()
        return [], f"cannot listen on UDP {port}: {exc.strerror or exc}"
    try:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                break
            data, anc, _, (src, _) = s.recvmsg(2048, socket.CMSG_SPACE(12))
            if src != source:
                continue
            dest = ""
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(value) >= 12:
                    dest = socket.inet_ntoa(value[8:12])  # in_pktinfo.ipi_addr
            out.append(Datagram(data, src, dest))
    finally:
        s.close()
    return out, ""


def udp_exchange(
    address: str, port: int, packet: bytes, timeout: float
) -> tuple[bytes, float, float]:
    """Send ``packet`` to ``address`` by unicast and wait for one answer from it: (answer,
    sent at, received at) in ``time.time()``; (b"", sent, 0.0) on timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        sent = time.time()
        try:
            s.sendto(packet, (address, port))
        except OSError:
            return b"", sent, 0.0
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                break
            with contextlib.suppress(OSError):
                data, (src, _) = s.recvfrom(2048)
                if src == address:
                    return data, sent, time.time()
    return b"", sent, 0.0


# ----- firewall ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Firewall:
    """The firewall tool this machine uses, and for nft the chain that filters input."""

    tool: str  # "firewalld" | "ufw" | "nft" | "iptables" | ""
    table: str = ""  # nft: "FAMILY NAME", e.g. "inet filter"
    chain: str = ""  # nft: the input chain's name


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return -1, ""
    return p.returncode, p.stdout


def firewall() -> Firewall:
    """firewalld when it runs, else ufw when it is enabled, else nft, else iptables."""
    if shutil.which("firewall-cmd") and _run(["firewall-cmd", "--state"])[1].strip() == "running":
        return Firewall("firewalld")
    if shutil.which("ufw") and _ufw_enabled():
        return Firewall("ufw")
    if shutil.which("nft"):
        table, chain = nftables.input_chain_in_use()
        return Firewall("nft", table, chain)
    if shutil.which("iptables"):
        return Firewall("iptables")
    return Firewall("")


def _ufw_enabled() -> bool:
    code, out = _run(["ufw", "status"])
    if code == 0:
        return "Status: active" in out
    with contextlib.suppress(OSError):  # not root: ufw's own config says whether it is on
        return "ENABLED=yes" in Path("/etc/ufw/ufw.conf").read_text()
    return False
