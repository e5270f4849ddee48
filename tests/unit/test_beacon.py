"""Beacon wire format: round trips, MAC checks, every strictness rule, and fuzzing."""

from __future__ import annotations

import dataclasses
import json
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lanray_tui.core import beacon
from lanray_tui.core.beacon import (
    MAGIC,
    MAX_PACKET,
    Beacon,
    DecodeStats,
    Query,
    decode,
    encode_beacon,
    encode_query,
    fingerprint,
    verify,
)

KEY = bytes(range(32))
NOW = 1_700_000_000.0


def make_beacon(**changes: Any) -> Beacon:
    fields: dict[str, Any] = {
        "cluster_id": "0123456789abcdef0123456789abcdef",
        "cluster_name": "lab",
        "host_name": "box-1",
        "head_address": "192.168.1.10",
        "gcs_port": 6379,
        "dashboard_port": 8265,
        "pairing_port": 47011,
        "ray_version": "2.60.0",
        "python_version": "3.11",
        "runtime": "native",
        "node_count": 3,
        "free_cpus": 12.5,
        "free_gpus": 1.0,
        "timestamp": NOW,
        "fingerprint": "ab" * 16,
    }
    fields.update(changes)
    return Beacon(**fields)


def body_of(b: Beacon) -> dict[str, Any]:
    return dataclasses.asdict(b)


def packet(
    body: dict[str, Any] | bytes,
    *,
    magic: bytes = MAGIC,
    version: int = 1,
    kind: bytes = b"B",
    length: int | None = None,
    mac: bytes | None = None,
) -> bytes:
    """Build a packet by hand, so each test can break exactly one thing."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    kind_byte = kind[0] | (0x80 if mac is not None else 0)
    header = struct.pack(
        ">4sBBH", magic, version, kind_byte, len(data) if length is None else length
    )
    return header + data + (mac or b"")


# ------------------------------------------------------------------------------ round trips


def test_round_trip_unsigned() -> None:
    b = make_beacon()
    decoded = decode(encode_beacon(b))
    assert decoded is not None
    assert decoded.kind == "beacon"
    assert decoded.beacon == b
    assert decoded.mac is None
    assert verify(decoded, KEY, NOW) == "forged"


def test_round_trip_signed_and_verify() -> None:
    b = make_beacon(cluster_name="Labor \u00e9t\u00e9 \u6771\u4eac")
    data = encode_beacon(b, KEY)
    decoded = decode(data)
    assert decoded is not None
    assert decoded.beacon == b
    assert decoded.mac == data[-32:]
    assert decoded.signed_part == data[:-32]
    assert verify(decoded, KEY, NOW) == "verified"
    assert verify(decoded, KEY, NOW + 29.0) == "verified"
    assert verify(decoded, KEY, NOW + 31.0) == "stale"
    assert verify(decoded, KEY, NOW - 31.0) == "stale"
    assert verify(decoded, KEY, NOW + 100.0, window_s=120.0) == "verified"
    assert verify(decoded, b"another key", NOW) == "forged"


def test_encoding_is_compact_sorted_json() -> None:
    data = encode_beacon(make_beacon())
    body = data[8:]
    assert (
        body == json.dumps(body_of(make_beacon()), separators=(",", ":"), sort_keys=True).encode()
    )
    assert struct.unpack(">H", data[6:8])[0] == len(body)


def test_int_accepted_for_float_fields() -> None:
    decoded = decode(packet(body_of(make_beacon()) | {"free_cpus": 4, "timestamp": 5}))
    assert decoded is not None and decoded.beacon is not None
    assert decoded.beacon.free_cpus == 4.0 and isinstance(decoded.beacon.free_cpus, float)


def test_forged_beacon_with_right_cluster_id_is_forged() -> None:
    # An attacker sees the cluster id in real beacons and copies it, but has no key.
    fake = make_beacon(head_address="10.6.6.6")
    for data in (encode_beacon(fake), encode_beacon(fake, b"guessed key")):
        decoded = decode(data)
        assert decoded is not None
        assert verify(decoded, KEY, NOW) == "forged"


def test_tampered_signed_beacon_is_forged() -> None:
    data = encode_beacon(make_beacon(host_name="box-1"), KEY)
    tampered = data.replace(b"box-1", b"box-2")
    decoded = decode(tampered)
    assert decoded is not None
    assert verify(decoded, KEY, NOW) == "forged"


def test_query_round_trip() -> None:
    q = Query(nonce="00ff" * 8)
    decoded = decode(encode_query(q))
    assert decoded is not None
    assert decoded.kind == "query"
    assert decoded.query == q
    assert decoded.beacon is None


def test_encode_refuses_invalid_beacon() -> None:
    with pytest.raises(ValueError, match="bad_port"):
        encode_beacon(make_beacon(gcs_port=0))
    with pytest.raises(ValueError, match="bad_hex"):
        encode_query(Query(nonce="not hex at all!!"))


def test_encode_refuses_oversized_packet() -> None:
    with pytest.raises(ValueError, match="over 1200"):
        encode_beacon(make_beacon(node_count=10**1500))


def test_beacon_carries_no_secret() -> None:
    names = {f.name for f in dataclasses.fields(Beacon)}
    for word in ("token", "key", "secret", "password", "code"):
        assert not any(word in name for name in names), word
    secret = b"super-secret-cluster-key-material"
    assert secret not in encode_beacon(make_beacon(), secret)


def test_fingerprint_is_short_stable_hex() -> None:
    fp = fingerprint(b"public key bytes")
    assert fp == fingerprint(b"public key bytes")
    assert fp != fingerprint(b"other key bytes")
    assert len(fp) == 32
    int(fp, 16)


# ------------------------------------------------------------------------- strictness rules

VALID = body_of(make_beacon())


def with_(**changes: Any) -> bytes:
    return packet(VALID | changes)


def without(name: str) -> bytes:
    return packet({k: v for k, v in VALID.items() if k != name})


GOOD_JSON = json.dumps(VALID).encode()

CASES: list[tuple[str, Callable[[], bytes]]] = [
    ("oversized", lambda: packet(b" " * (MAX_PACKET))),
    ("short", lambda: b"LRAY\x01B"),
    ("short", lambda: b""),
    ("bad_magic", lambda: packet(VALID, magic=b"LRAX")),
    ("bad_version", lambda: packet(VALID, version=2)),
    ("bad_version", lambda: packet(VALID, version=0)),
    ("bad_kind", lambda: packet(VALID, kind=b"X")),
    ("bad_length", lambda: packet(VALID, length=len(GOOD_JSON) + 1)),
    ("bad_length", lambda: packet(VALID, length=len(GOOD_JSON) - 1)),
    ("bad_length", lambda: packet(VALID) + b"\x00"),
    ("bad_length", lambda: packet(VALID, mac=b"\x00" * 31)),
    ("bad_json", lambda: packet(b"\xff\xfe")),
    ("bad_json", lambda: packet(b"{not json")),
    ("bad_json", lambda: packet(b"[" * 1000)),
    ("not_object", lambda: packet(b"[1, 2]")),
    ("not_object", lambda: packet(b'"text"')),
    ("duplicate_field", lambda: packet(GOOD_JSON[:-1] + b', "runtime": "docker"}')),
    ("missing_field", lambda: without("fingerprint")),
    ("unknown_field", lambda: with_(token="abc")),
    ("bad_type", lambda: with_(gcs_port="6379")),
    ("bad_type", lambda: with_(gcs_port=True)),
    ("bad_type", lambda: with_(node_count=2.0)),
    ("bad_type", lambda: with_(free_cpus=False)),
    ("bad_type", lambda: with_(free_gpus="1")),
    ("bad_type", lambda: with_(cluster_name=None)),
    ("bad_type", lambda: with_(host_name=["a"])),
    ("too_long", lambda: with_(cluster_name="x" * 65)),
    ("too_long", lambda: with_(host_name="x" * 65)),
    ("too_long", lambda: with_(ray_version="1" * 33)),
    ("too_long", lambda: with_(cluster_id="a" * 34)),
    ("too_long", lambda: with_(fingerprint="a" * 65)),
    ("too_short", lambda: with_(cluster_id="a" * 15)),
    ("too_short", lambda: with_(host_name="")),
    ("bad_text", lambda: with_(host_name="evil\x1b[2J")),
    ("bad_text", lambda: with_(cluster_name="two\nlines")),
    ("bad_hex", lambda: with_(cluster_id="g" * 16)),
    ("bad_hex", lambda: with_(fingerprint="AB" * 8)),
    ("bad_port", lambda: with_(gcs_port=0)),
    ("bad_port", lambda: with_(dashboard_port=65536)),
    ("bad_port", lambda: with_(pairing_port=-1)),
    ("bad_ipv4", lambda: with_(head_address="1.2.3")),
    ("bad_ipv4", lambda: with_(head_address="256.1.1.1")),
    ("bad_ipv4", lambda: with_(head_address="01.2.3.4")),
    ("bad_ipv4", lambda: with_(head_address="::1")),
    ("bad_ipv4", lambda: with_(head_address="0.0.0.0")),
    ("bad_ipv4", lambda: with_(head_address="255.255.255.255")),
    ("bad_ipv4", lambda: with_(head_address="224.0.0.1")),
    ("negative", lambda: with_(node_count=-1)),
    ("negative", lambda: with_(free_cpus=-0.5)),
    ("negative", lambda: with_(free_gpus=-1)),
    ("negative", lambda: with_(timestamp=-1.0)),
    ("non_finite", lambda: with_(free_cpus=float("nan"))),
    ("non_finite", lambda: with_(free_gpus=float("inf"))),
    (
        "non_finite",
        lambda: packet(GOOD_JSON.replace(b'"timestamp": 1700000000.0', b'"timestamp": 1e999')),
    ),
    ("non_finite", lambda: with_(free_cpus=10**400)),
    ("bad_runtime", lambda: with_(runtime="podman")),
    ("bad_python_version", lambda: with_(python_version="3")),
    ("bad_python_version", lambda: with_(python_version="three.11")),
    ("missing_field", lambda: packet({}, kind=b"Q")),
    ("unknown_field", lambda: packet({"nonce": "ab" * 8, "x": 1}, kind=b"Q")),
    ("bad_type", lambda: packet({"nonce": 12}, kind=b"Q")),
    ("bad_hex", lambda: packet({"nonce": "zz" * 8}, kind=b"Q")),
    ("too_short", lambda: packet({"nonce": "ab"}, kind=b"Q")),
    ("too_long", lambda: packet({"nonce": "ab" * 33}, kind=b"Q")),
]


@pytest.mark.parametrize(("reason", "build"), CASES)
def test_strictness_rule(reason: str, build: Callable[[], bytes]) -> None:
    assert reason in beacon.REASONS
    stats = DecodeStats()
    assert decode(build(), stats) is None
    assert stats.counts == {reason: 1}
    assert stats.dropped == 1


def test_every_reason_is_tested() -> None:
    tested = {reason for reason, _ in CASES}
    # "internal" only counts bugs, which we hope not to have.
    assert tested == set(beacon.REASONS) - {"internal"}


def test_valid_hand_built_packet_is_accepted() -> None:
    # Guards the strictness cases: each breaks one rule of an otherwise accepted packet.
    assert decode(packet(VALID)) is not None
    assert decode(packet({"nonce": "ab" * 8}, kind=b"Q")) is not None


def test_stats_accumulate() -> None:
    stats = DecodeStats()
    for data in (b"", b"x", with_(runtime="podman")):
        decode(data, stats)
    assert stats.counts == {"short": 2, "bad_runtime": 1}
    assert stats.dropped == 3


# -------------------------------------------------------------------------------- fuzzing

SEEDS = [
    encode_beacon(make_beacon()),
    encode_beacon(make_beacon(), KEY),
    encode_query(Query(nonce="ab" * 8)),
]


def mutate(seed: int) -> bytes:
    """Flip, overwrite, cut, extend or splice a valid packet, a few times.

    One Hypothesis draw (the seed) per example keeps 10,000 examples within a few seconds;
    a failure still reproduces from the seed Hypothesis reports.
    """
    rng = random.Random(seed)
    data = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("flip", "set", "truncate", "extend", "insert"))
        if op == "truncate":
            del data[rng.randint(0, len(data)) :]
        elif op == "extend":
            data += rng.randbytes(rng.randint(0, 64))
        elif op == "insert":
            at = rng.randint(0, len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif data:
            at = rng.randrange(len(data))
            if op == "flip":
                data[at] ^= 1 << rng.randrange(8)
            else:
                data[at] = rng.randrange(256)
    return bytes(data)


def check_decode_never_raises(data: bytes) -> None:
    stats = DecodeStats()
    result = decode(data, stats)
    if result is None:
        assert stats.dropped == 1
        assert "internal" not in stats.counts
    elif result.beacon is not None:
        # Whatever decode accepts, the sender side must accept too.
        encode_beacon(result.beacon)


@settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
@given(
    st.one_of(
        st.binary(max_size=MAX_PACKET + 8),
        st.binary(max_size=16).map(MAGIC.__add__),
        st.integers(min_value=0, max_value=2**64).map(mutate),
    )
)
def test_fuzz_decode_never_raises(data: bytes) -> None:
    stats = DecodeStats()
    result = decode(data, stats)
    if result is None:
        assert stats.dropped == 1
        assert "internal" not in stats.counts
    elif result.beacon is not None:
        # Whatever decode accepts, the sender side must accept too.
        encode_beacon(result.beacon)


def test_mutations_reach_past_the_header() -> None:
    # The fuzzer is only useful if mutated packets get into the JSON and field checks.
    stats = DecodeStats()
    accepted = sum(decode(mutate(seed), stats) is not None for seed in range(2000))
    assert accepted > 0
    assert {"bad_json", "bad_length"} <= stats.counts.keys()


@pytest.mark.parametrize(("src", "joinable"), [("192.168.1.10", True), ("192.168.1.66", False)])
def test_a_beacon_naming_another_machine_as_head_is_shown_so_and_not_joinable(
    src: str, joinable: bool
) -> None:
    """A spoofer can send a beacon that names the real host's address (or vice versa): the
    joiner shows where it came from and never joins it by name."""
    from lanray_tui.core import discovery

    prober = discovery.Prober.__new__(discovery.Prober)  # no socket: to_host is pure
    prober.key_for, prober.stats = (lambda cid: None), DecodeStats()
    found = prober.to_host(encode_beacon(make_beacon()), src)
    assert found is not None and found.address == "192.168.1.10"
    assert found.compatible is joinable
    if not joinable:
        assert found.why_not == "its beacon came from 192.168.1.66 but names 192.168.1.10 as head"


def test_a_spoofed_beacon_never_takes_the_real_hosts_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spoof and the real host are two entries of a scan (keyed by sender too), and a
    join by address or name picks the host's own beacon, whichever arrived last."""
    from lanray_tui.core import config, discovery, lifecycle

    prober = discovery.Prober.__new__(discovery.Prober)
    prober.key_for, prober.stats = (lambda cid: None), DecodeStats()
    real = prober.to_host(encode_beacon(make_beacon()), "192.168.1.10")
    spoof = prober.to_host(encode_beacon(make_beacon(cluster_name="aaa-evil")), "192.168.1.66")
    assert real is not None and spoof is not None and real.key != spoof.key
    for order in ([real, spoof], [spoof, real]):
        seen = {h.key: h for h in order}
        assert len(seen) == 2
        monkeypatch.setattr(
            discovery, "scan", lambda cfg, timeout=1.5, o=order: discovery.ScanResult(hosts=o)
        )
        assert lifecycle.find_host(config.load(), "192.168.1.10") is real
