"""UDP beacon wire format: how a head announces its cluster and how a joiner asks who is there.

A packet is ``MAGIC`` + version byte + kind byte + 2-byte big-endian body length + body (compact
JSON, sorted keys), optionally followed by a 32-byte HMAC-SHA256 over everything before it. The
kind byte is ``B`` (beacon) or ``Q`` (query); its high bit says a MAC follows.

Packets come from anyone on the LAN, so :func:`decode` is strict and bounded and never raises:
anything unexpected is dropped and counted. A beacon carries no secret; the MAC only lets members
of a cluster tell their head's beacons from forged ones.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PROTOCOL_VERSION = 1
MAX_PACKET = 1200  # bytes; fits one Ethernet frame
MAGIC = b"LRAY"
MAC_LEN = 32

_HEADER = struct.Struct(">4sBBH")
_KIND_BEACON = ord("B")
_KIND_QUERY = ord("Q")
_MAC_FLAG = 0x80

_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_HEX = re.compile(r"[0-9a-f]*")
_PYTHON_VERSION = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}")
RUNTIMES = ("native", "docker")

# Every reason decode() may count, so callers can show them all (even at zero) and tests can
# check that each rule is reached.
REASONS = (
    "oversized",
    "short",
    "bad_magic",
    "bad_version",
    "bad_kind",
    "bad_length",
    "bad_json",
    "not_object",
    "duplicate_field",
    "missing_field",
    "unknown_field",
    "bad_type",
    "too_long",
    "too_short",
    "bad_text",
    "bad_hex",
    "bad_port",
    "bad_ipv4",
    "negative",
    "non_finite",
    "bad_runtime",
    "bad_python_version",
    "internal",
)


@dataclass(frozen=True)
class Beacon:
    """What a head announces about its cluster. Carries no secret."""

    cluster_id: str  # 16-32 hex chars
    cluster_name: str  # 1-64 chars
    host_name: str  # 1-64 chars
    head_address: str  # IPv4 dotted
    gcs_port: int
    dashboard_port: int
    pairing_port: int
    ray_version: str  # 1-32 chars
    python_version: str  # "3.11" style
    runtime: str  # "native" | "docker"
    node_count: int
    free_cpus: float
    free_gpus: float
    timestamp: float  # unix seconds
    fingerprint: str  # host key fingerprint, hex, at most 64 chars


@dataclass(frozen=True)
class Query:
    """A joiner's scan query; a head answers it at once with a unicast beacon."""

    nonce: str  # 16-64 hex chars


@dataclass(frozen=True)
class Decoded:
    """One accepted packet: its content, plus what :func:`verify` needs to check its MAC."""

    kind: Literal["beacon", "query"]
    beacon: Beacon | None
    query: Query | None
    signed_part: bytes  # the bytes the MAC covers
    mac: bytes | None


@dataclass
class DecodeStats:
    """Counts of dropped packets, by reason."""

    counts: dict[str, int] = field(default_factory=dict)
    dropped: int = 0

    def count(self, reason: str) -> None:
        """Record one dropped packet."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.dropped += 1


class _Reject(Exception):
    """Internal: a packet broke rule ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_STR, _INT, _FLOAT = "str", "int", "float"
_BEACON_KINDS = {
    "cluster_id": _STR,
    "cluster_name": _STR,
    "host_name": _STR,
    "head_address": _STR,
    "gcs_port": _INT,
    "dashboard_port": _INT,
    "pairing_port": _INT,
    "ray_version": _STR,
    "python_version": _STR,
    "runtime": _STR,
    "node_count": _INT,
    "free_cpus": _FLOAT,
    "free_gpus": _FLOAT,
    "timestamp": _FLOAT,
    "fingerprint": _STR,
}
# (min, max) length of each string field.
_LENGTHS = {
    "cluster_id": (16, 32),
    "cluster_name": (1, 64),
    "host_name": (1, 64),
    "head_address": (1, 15),
    "ray_version": (1, 32),
    "python_version": (1, 16),
    "runtime": (1, 16),
    "fingerprint": (1, 64),
    "nonce": (16, 64),
}
_PORTS = ("gcs_port", "dashboard_port", "pairing_port")


def _check_types(obj: dict[str, Any], kinds: dict[str, str]) -> None:
    if kinds.keys() - obj.keys():
        raise _Reject("missing_field")
    if obj.keys() - kinds.keys():
        raise _Reject("unknown_field")
    for name, kind in kinds.items():
        value = obj[name]
        # bool is a subclass of int, but true/false is never a valid count or port.
        if isinstance(value, bool):
            raise _Reject("bad_type")
        if kind == _STR and not isinstance(value, str):
            raise _Reject("bad_type")
        if kind == _INT and not isinstance(value, int):
            raise _Reject("bad_type")
        if kind == _FLOAT and not isinstance(value, (int, float)):
            raise _Reject("bad_type")


def _check_text(obj: dict[str, Any], kinds: dict[str, str]) -> None:
    for name, kind in kinds.items():
        if kind != _STR:
            continue
        value = obj[name]
        low, high = _LENGTHS[name]
        if len(value) > high:
            raise _Reject("too_long")
        if len(value) < low:
            raise _Reject("too_short")
        # Names end up on a terminal: control characters could rewrite the screen.
        if not value.isprintable():
            raise _Reject("bad_text")


def _finite_float(value: int | float) -> float:
    try:
        result = float(value)
    except OverflowError:
        raise _Reject("non_finite") from None
    if not math.isfinite(result):
        raise _Reject("non_finite")
    return result


def _check_beacon(obj: dict[str, Any]) -> Beacon:
    _check_types(obj, _BEACON_KINDS)
    _check_text(obj, _BEACON_KINDS)
    for name in ("cluster_id", "fingerprint"):
        if not _HEX.fullmatch(obj[name]):
            raise _Reject("bad_hex")
    for name in _PORTS:
        if not 1 <= obj[name] <= 65535:
            raise _Reject("bad_port")
    try:
        address = ipaddress.IPv4Address(obj["head_address"])
    except ValueError:
        raise _Reject("bad_ipv4") from None
    # A head is one unicast host; anything else would send joiners somewhere odd.
    if address.is_multicast or address.is_unspecified or address == _BROADCAST:
        raise _Reject("bad_ipv4")
    if obj["runtime"] not in RUNTIMES:
        raise _Reject("bad_runtime")
    if not _PYTHON_VERSION.fullmatch(obj["python_version"]):
        raise _Reject("bad_python_version")
    values = dict(obj)
    for name in ("free_cpus", "free_gpus", "timestamp"):
        values[name] = _finite_float(obj[name])
    for name in ("node_count", "free_cpus", "free_gpus", "timestamp"):
        if values[name] < 0:
            raise _Reject("negative")
    return Beacon(**values)


def _check_query(obj: dict[str, Any]) -> Query:
    kinds = {"nonce": _STR}
    _check_types(obj, kinds)
    _check_text(obj, kinds)
    if not _HEX.fullmatch(obj["nonce"]):
        raise _Reject("bad_hex")
    return Query(nonce=obj["nonce"])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Reject("duplicate_field")
    return obj


def _encode(kind: int, body: dict[str, Any], key: bytes | None) -> bytes:
    # UTF-8 rather than \u escapes: up to 3x smaller for non-ASCII names.
    data = json.dumps(
        body, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode()
    size = _HEADER.size + len(data) + (MAC_LEN if key is not None else 0)
    if size > MAX_PACKET:
        raise ValueError(f"beacon packet would be {size} bytes, over {MAX_PACKET}")
    if key is None:
        return _HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, len(data)) + data
    packet = _HEADER.pack(MAGIC, PROTOCOL_VERSION, kind | _MAC_FLAG, len(data)) + data
    return packet + hmac.new(key, packet, hashlib.sha256).digest()


def encode_beacon(b: Beacon, key: bytes | None = None) -> bytes:
    """Encode ``b``; with ``key``, append an HMAC-SHA256 so cluster members can verify it.

    Raises ValueError if a field breaks a rule :func:`decode` enforces or the packet would exceed
    ``MAX_PACKET``: it is better to fail at the sender than to be silently dropped everywhere.
    """
    try:
        _check_beacon(asdict(b))
    except _Reject as e:
        raise ValueError(f"invalid beacon: {e.reason}") from None
    return _encode(_KIND_BEACON, asdict(b), key)


def encode_query(q: Query) -> bytes:
    """Encode a scan query (never signed: the joiner has no cluster key yet)."""
    try:
        _check_query(asdict(q))
    except _Reject as e:
        raise ValueError(f"invalid query: {e.reason}") from None
    return _encode(_KIND_QUERY, asdict(q), None)


def _decode(packet: bytes) -> Decoded:
    if len(packet) > MAX_PACKET:
        raise _Reject("oversized")
    if len(packet) < _HEADER.size:
        raise _Reject("short")
    magic, version, kind, length = _HEADER.unpack_from(packet)
    if magic != MAGIC:
        raise _Reject("bad_magic")
    if version != PROTOCOL_VERSION:
        raise _Reject("bad_version")
    signed = bool(kind & _MAC_FLAG)
    kind &= ~_MAC_FLAG
    if kind not in (_KIND_BEACON, _KIND_QUERY):
        raise _Reject("bad_kind")
    mac_len = MAC_LEN if signed else 0
    if _HEADER.size + length + mac_len != len(packet):
        raise _Reject("bad_length")
    end = _HEADER.size + length
    try:
        obj = json.loads(
            packet[_HEADER.size : end].decode("utf-8"), object_pairs_hook=_no_duplicates
        )
    except (ValueError, RecursionError):
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting hits recursion.
        raise _Reject("bad_json") from None
    if not isinstance(obj, dict):
        raise _Reject("not_object")
    signed_part = packet[:end]
    mac = packet[end:] if signed else None
    if kind == _KIND_BEACON:
        return Decoded("beacon", _check_beacon(obj), None, signed_part, mac)
    return Decoded("query", None, _check_query(obj), signed_part, mac)


def decode(packet: bytes, stats: DecodeStats | None = None) -> Decoded | None:
    """Parse one packet; return None (and count the reason in ``stats``) if it breaks any rule.

    Never raises: packets come from anyone on the LAN.
    """
    try:
        return _decode(packet)
    except _Reject as e:
        reason = e.reason
    except Exception:
        # A bug here must cost one packet, not the listener.
        reason = "internal"
    if stats is not None:
        stats.count(reason)
    return None


def verify(
    decoded: Decoded, key: bytes, now: float, window_s: float = 30.0
) -> Literal["verified", "forged", "stale"]:
    """Check a decoded packet's MAC with the cluster ``key`` and a beacon's freshness.

    No MAC or a wrong MAC is "forged"; a beacon whose timestamp is more than ``window_s`` from
    ``now`` is "stale" (a replay, or a clock far off).
    """
    if decoded.mac is None:
        return "forged"
    expected = hmac.new(key, decoded.signed_part, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, decoded.mac):
        return "forged"
    if decoded.beacon is not None and abs(now - decoded.beacon.timestamp) > window_s:
        return "stale"
    return "verified"


def fingerprint(public_bytes: bytes) -> str:
    """Short hex fingerprint of a public key: the first 16 bytes of its SHA-256."""
    return hashlib.sha256(public_bytes).hexdigest()[:32]
