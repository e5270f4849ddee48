"""Pairing hands the joiner a certificate, and token joining gets one by the same exchange:
real sockets on 127.0.0.1, real SPAKE2, real keys and a real CA."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spake2 import SPAKE2_A

from lanray_tui.core import config, credentials, lifecycle, pairing_wire
from lanray_tui.core.agent.host_services import HostServices
from lanray_tui.core.cluster_ca import CertError, NodeTls, cert_ips, make_csr, new_key_pem
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.joincode import CodeBook
from lanray_tui.core.pairing import PairingError, TokenGuard, pair, pair_with_token
from lanray_tui.core.pairing_wire import _AAD, _AAD_CSR, _seal, _unseal
from tests.helpers.pairingkit import (
    CLUSTER_KEY,
    CREDS,
    TOKEN,
    FakeClock,
    frame,
    pair_async,
    paired,
    raw_client,
    serving,
    wrong_code,
)


def joiner_tls(tmp_path: Path, name: str = "w1") -> NodeTls:
    return NodeTls(tmp_path / name / "tls")


# ----------------------------------------------------------------- a joiner by hand


class Manual:
    """A joiner written out frame by frame from the wire's pieces, so that a test can send
    what :func:`pair` never would (a replayed message, a bad sealed frame)."""

    def __init__(self, port: int, mode: str, secret: str, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.settimeout(3.0)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.hello = pairing_wire._json_bytes(
            {"v": 3, "mode": mode, "cluster_id": None, "node_name": "manual"}
        )
        self.spake = SPAKE2_A(
            pairing_wire._password(mode, secret),
            idA=pairing_wire._ID_JOINER,
            idB=pairing_wire._ID_HOST,
        )
        self.msg_a = self.spake.start()

    def _recv(self) -> bytes:
        head = self._exactly(4)
        return self._exactly(int.from_bytes(head, "big"))

    def _exactly(self, n: int) -> bytes:
        got = b""
        while len(got) < n:
            chunk = self.sock.recv(n - len(got))
            if not chunk:
                raise ConnectionError("closed")
            got += chunk
        return got

    def keys(self) -> tuple[bytes, bytes, bytes]:
        """Hello and SPAKE2 out, the host's message in: (confirm key, seal key, transcript)."""
        self.sock.sendall(frame(self.hello) + frame(self.msg_a))
        msg_b = self._recv()
        key = self.spake.finish(msg_b)
        transcript = pairing_wire._transcript(self.hello, self.msg_a, msg_b)
        confirm, seal = pairing_wire._derive(key, transcript)
        self.tag = pairing_wire._confirm_tag(confirm, b"joiner", transcript)
        self.host_tag = pairing_wire._confirm_tag(confirm, b"host", transcript)
        return confirm, seal, transcript

    def finish(self, csr_frame: bytes) -> bytes:
        """Our tag and ``csr_frame`` out; everything the host answers until it hangs up."""
        self.sock.sendall(frame(self.tag) + frame(csr_frame))
        got = b""
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(65536):
                got += chunk
        self.sock.close()
        return got


def error_of(reply: bytes) -> str:
    """The host's one-line error frame, as the joiner shows it."""
    with pytest.raises(PairingError) as info:
        pairing_wire._raise_if_refused(reply[4:])
    assert "\n" not in str(info.value)
    return str(info.value)


# -------------------------------------------------------------------- the certificate


async def test_pairing_returns_a_certificate_for_the_joiners_own_key(tmp_path: Path) -> None:
    tls = joiner_tls(tmp_path)
    csr = tls.request("worker-1", ["10.9.8.7"])
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    async with serving() as service:
        code = service.codes.issue()
        got = await asyncio.to_thread(
            pair, "127.0.0.1", service.port, code, node_name="worker-1", csr=csr
        )
        host_ca = service.tls.ca_cert.read_text()  # type: ignore[attr-defined]
    assert paired(got) == CREDS
    assert got["ca"] == host_ca
    tls.store(got["cert"].encode(), got["ca"].encode())  # checks: this key's, the CA's, valid now
    assert tls.ready()
    assert set(cert_ips(tls.cert.read_bytes())) == {"10.9.8.7", "127.0.0.1"}
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "worker-1"
    # Only the request went out: the key is still this node's alone.
    assert tls.key.read_bytes() not in str(got).encode()


async def test_a_wrong_code_gets_no_certificate(tmp_path: Path) -> None:
    tls = joiner_tls(tmp_path)
    csr = tls.request("worker-1", ["127.0.0.1"])
    asked: list[bytes] = []

    def signer(hello: dict[str, Any], csr: bytes) -> dict[str, Any]:
        asked.append(csr)
        return {**CREDS, "cert": "", "ca": ""}

    async with serving(creds=signer) as service:
        code = service.codes.issue()
        with pytest.raises(PairingError, match="wrong join code"):
            await asyncio.to_thread(
                pair, "127.0.0.1", service.port, wrong_code(code), node_name="w", csr=csr
            )
        assert service.codes.failures_total == 1 and service.paired == 0
    assert asked == []  # the host never read, let alone signed, the request
    assert not tls.cert.exists()


# ---------------------------------------------------------------------- token mode


async def test_the_token_pairs_with_no_live_code(tmp_path: Path) -> None:
    tls = joiner_tls(tmp_path)
    clock = FakeClock()
    async with serving(CodeBook(clock=clock)) as service:
        for setup in ("never issued", "closed", "locked"):
            if setup == "closed":
                service.codes.issue()
                service.codes.close()
            elif setup == "locked":
                service.codes.issue()
                for i in range(20):
                    service.codes.fail(f"10.0.0.{i}")
                assert service.codes.state().value == "locked"
            got = await asyncio.to_thread(
                pair_with_token,
                "127.0.0.1",
                service.port,
                TOKEN,
                node_name="script",
                csr=tls.request("script", ["127.0.0.1"]),
            )
            # The joiner learns the cluster's id and name, not empty strings.
            assert paired(got) == CREDS, setup
            tls.store(got["cert"].encode(), got["ca"].encode())
        assert service.paired == 3
        assert service.hellos[0]["mode"] == "token"  # type: ignore[attr-defined]
        assert service.codes.failures_total == 20  # only the ones recorded above


async def test_a_wrong_token_is_refused_and_spends_no_code_budget() -> None:
    clock = FakeClock()
    async with serving() as service:
        service.tokens = TokenGuard(per_source=2, backoff_s=60, clock=clock)
        code = service.codes.issue()
        for _ in range(2):
            with pytest.raises(PairingError, match="did not accept this token"):
                await pair_async(service.port, "not-the-token", mode="token", source="127.0.0.7")
        assert service.tokens.failures_total == 2
        # The code's budget is untouched: no failure, no backoff, every address may still try.
        assert service.codes.failures_total == 0
        assert service.codes.retry_in() == 0 and service.codes.refusal("127.0.0.7") is None
        assert service.codes.uses_left() == 5
        # Past the per-source limit that address waits, refused before any SPAKE2 work ...
        with pytest.raises(PairingError, match="too many failed token attempts"):
            await pair_async(service.port, TOKEN, mode="token", source="127.0.0.7")
        assert service.refused == 1
        # ... but not with a code, and nobody else waits.
        assert paired(await pair_async(service.port, code, source="127.0.0.7")) == CREDS
        assert paired(await pair_async(service.port, TOKEN, mode="token")) == CREDS
        clock.now += 60
        assert paired(await pair_async(service.port, TOKEN, mode="token", source="127.0.0.7"))
        summary = service.summary()
        assert summary["token_failures_total"] == 2 and summary["failures_total"] == 0
        assert summary["pairing_summary"] == "2 failed pairing attempts from 127.0.0.7"


async def test_a_host_without_a_token_refuses_token_mode() -> None:
    async with serving(token=lambda: "") as service:
        with pytest.raises(PairingError, match="takes no token"):
            await pair_async(service.port, TOKEN, mode="token")
        assert service.refused == 1


async def test_a_replayed_token_exchange_is_dropped() -> None:
    async with serving() as service:
        # A real token exchange, done by hand so that its frames can be sent again.
        first = Manual(service.port, "token", TOKEN)
        _, seal, _ = await asyncio.to_thread(first.keys)
        csr = make_csr(new_key_pem(), "manual", ["127.0.0.1"])
        reply = await asyncio.to_thread(first.finish, _seal(seal, _AAD_CSR, csr))
        assert reply[4 : 4 + 32] == first.host_tag
        assert service.paired == 1
        # Its SPAKE2 message again, from another address: dropped before any SPAKE2 work,
        # no certificate and nothing counted.
        again = frame(first.hello) + frame(first.msg_a) + frame(first.tag)
        _, reply = await raw_client(service.port, again, "127.0.0.2")
        assert reply == b""
        assert service.replay.replays == 1 and service.paired == 1
        assert service.tokens.failures_total == 0 and service.codes.failures_total == 0


# ------------------------------------------------------------- bad signing requests


async def test_a_bad_sealed_request_gets_one_line_and_the_host_stays_up() -> None:
    dns_key = new_key_pem()
    async with serving() as service:
        code = service.codes.issue(uses=20)
        cases: list[tuple[str, Any]] = [
            ("does not decrypt", lambda seal: os.urandom(200)),
            ("does not decrypt", lambda seal: b"short"),
            # the host's own sealing reflected back: other associated data, so it fails
            ("does not decrypt", lambda seal: _seal(seal, _AAD, b"-----BEGIN CERTIFICATE")),
            ("not a PEM certificate request", lambda seal: _seal(seal, _AAD_CSR, b"\x00" * 64)),
            ("over 4096 bytes", lambda seal: _seal(seal, _AAD_CSR, b"x" * 5000)),
            # a well-formed request the CA does not sign (its CertError, as one line)
            ("IP addresses only", lambda seal: _seal(seal, _AAD_CSR, _dns_csr(dns_key))),
        ]
        for want, body in cases:
            joiner = Manual(service.port, "code", code)
            _, seal, _ = await asyncio.to_thread(joiner.keys)
            reply = await asyncio.to_thread(joiner.finish, body(seal))
            line = error_of(reply)
            assert "bad signing request" in line and want in line, (want, line)
        # Not a guess: the tag verified. Each did spend a use of the code (documented).
        assert service.codes.failures_total == 0
        assert service.codes.uses_left() == 20 - len(cases)
        assert service.paired == 0
        assert paired(await pair_async(service.port, code)) == CREDS


def _dns_csr(key_pem: bytes) -> bytes:
    """A well-formed request that names a host name, which a node certificate may not."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    names = [x509.DNSName("evil.example"), x509.IPAddress(ipaddress.IPv4Address("10.0.0.1"))]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "n")]))
        .add_extension(x509.SubjectAlternativeName(names), False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------- on the wire


async def test_the_wire_carries_no_token_key_or_private_key(tmp_path: Path) -> None:
    captured = bytearray()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                captured.extend(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    tls = joiner_tls(tmp_path)
    csr = tls.request("worker-1", ["127.0.0.1"])
    async with serving() as service:
        code = service.codes.issue()

        async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", service.port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        relay = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = relay.sockets[0].getsockname()[1]
        try:
            by_code = await asyncio.to_thread(
                pair, "127.0.0.1", port, code, node_name="worker-1", csr=csr
            )
            by_token = await asyncio.to_thread(
                pair_with_token, "127.0.0.1", port, TOKEN, node_name="worker-1", csr=csr
            )
            with pytest.raises(PairingError, match="did not accept"):
                await asyncio.to_thread(
                    pair_with_token, "127.0.0.1", port, TOKEN + "x", node_name="w", csr=csr
                )
        finally:
            relay.close()
            await relay.wait_closed()

    wire = bytes(captured)
    assert len(wire) > 2000
    key = serialization.load_pem_private_key(tls.key.read_bytes(), None)
    private_value = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem_lines = [line for line in tls.key.read_bytes().splitlines() if b"-----" not in line]
    secrets = [TOKEN.encode(), CLUSTER_KEY.encode(), bytes.fromhex(CLUSTER_KEY), b"cluster_key"]
    secrets += [code.encode(), private_value, der, *pem_lines]
    for secret in secrets:
        assert secret not in wire, secret
    # The request and the certificates are sealed too (not secret, but nobody's business).
    for cert in (by_code["cert"], by_token["cert"]):
        assert (
            x509.load_pem_x509_certificate(cert.encode()).public_bytes(serialization.Encoding.DER)
            not in wire
        )
    assert csr not in wire and b"CERTIFICATE" not in wire


def test_sealed_frames_are_bound_to_their_direction() -> None:
    key = os.urandom(32)
    sealed = _seal(key, _AAD_CSR, b"request")
    assert _unseal(key, _AAD_CSR, sealed) == b"request"
    assert _unseal(key, _AAD, sealed) is None
    assert _unseal(os.urandom(32), _AAD_CSR, sealed) is None
    assert _seal(key, _AAD_CSR, b"request") != sealed  # a fresh nonce each time


# --------------------------------------------------------------------- the host agent


def test_the_host_signs_with_its_ca(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    node = SimpleNamespace(creds=Credentials(**CREDS))  # type: ignore[arg-type]
    services = HostServices(node, None, None, None, data_dir)  # type: ignore[arg-type]
    tls = joiner_tls(tmp_path)
    got = services.credentials_for_joiner({"node_name": "w"}, tls.request("w", ["10.0.0.5"]))
    assert paired(got) == CREDS
    tls.store(got["cert"].encode(), got["ca"].encode())
    assert tls.covers(["10.0.0.5"])
    # The CA is the host's (made at agent start, or here if it was missing), and stays.
    host_tls = NodeTls(data_dir / "tls")
    assert got["ca"] == host_tls.ca_cert.read_text()
    again = services.credentials_for_joiner({"node_name": "w"}, tls.request("w", ["10.0.0.5"]))
    assert again["ca"] == got["ca"] and again["cert"] != got["cert"]
    with pytest.raises(CertError):
        services.credentials_for_joiner({"node_name": "w"}, b"-----BEGIN CERTIFICATE REQUEST-----")


# ------------------------------------------------------------------------ lifecycle


@pytest.fixture
def no_agent(monkeypatch: pytest.MonkeyPatch) -> list[Credentials]:
    """What ``join`` would start the worker with, instead of starting it."""
    started: list[Credentials] = []

    def start(cfg: Any, creds: Credentials, *args: Any) -> Any:
        lifecycle.store_join_credentials(cfg.paths(), creds)
        started.append(creds)
        return SimpleNamespace(head_address=creds.head_address)

    monkeypatch.setattr(lifecycle, "_start_worker", start)
    monkeypatch.setattr(lifecycle, "find_host", lambda cfg, target: None)  # no LAN scan
    return started


def _cfg(port: int) -> config.Config:
    return config.load().with_overrides(pairing__port=port)


def _check_node_tls(cfg: config.Config) -> None:
    tls = NodeTls(cfg.paths().tls_dir)
    assert tls.ready()
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    assert "127.0.0.1" in cert_ips(tls.cert.read_bytes())


async def test_join_with_token_pairs_and_stores_the_certificate(no_agent: list[Any]) -> None:
    async with serving() as service:
        cfg = _cfg(service.port)
        await asyncio.to_thread(lifecycle.join_with_token, cfg, "127.0.0.1", TOKEN)
        with pytest.raises(LanrayError, match="did not accept this token"):
            await asyncio.to_thread(lifecycle.join_with_token, cfg, "127.0.0.1", "wrong")
        with pytest.raises(LanrayError, match="port is not a number"):
            await asyncio.to_thread(lifecycle.join_with_token, cfg, "127.0.0.1:x", TOKEN)
    (creds,) = no_agent
    assert creds.cluster_id == CREDS["cluster_id"] and creds.cluster_name == "lab"
    assert creds.token == TOKEN and creds.cluster_key == CLUSTER_KEY
    _check_node_tls(cfg)


async def test_join_with_code_stores_the_certificate(no_agent: list[Any]) -> None:
    async with serving() as service:
        cfg = _cfg(service.port)
        code = service.codes.issue()
        await asyncio.to_thread(lifecycle.join_with_code, cfg, "127.0.0.1", code)
    assert no_agent[0].cluster_id == CREDS["cluster_id"]
    _check_node_tls(cfg)


async def test_join_again_from_before_certificates_gets_one_by_token(
    no_agent: list[Any],
) -> None:
    async with serving() as service:
        cfg = _cfg(service.port)
        paths = cfg.paths()
        old = Credentials("", "", TOKEN, "", "127.0.0.1", 6379, 8265)  # a token join of old
        credentials.save(paths.credentials, old)
        await asyncio.to_thread(lifecycle.join_again, cfg, None)
        _check_node_tls(cfg)
        assert no_agent[-1].cluster_id == CREDS["cluster_id"]
        # With its certificate, the next rejoin asks the host nothing.
        before = service.paired
        await asyncio.to_thread(lifecycle.join_again, cfg, None)
        assert service.paired == before and len(no_agent) == 2
        # A stale token and no certificate: one line that says to pair with a code.
        for f in NodeTls(paths.tls_dir).folder.iterdir():
            f.unlink()
        credentials.save(paths.credentials, old.replace(token="stale"))
        with pytest.raises(LanrayError) as info:
            await asyncio.to_thread(lifecycle.join_again, cfg, None)
    line = str(info.value)
    assert "\n" not in line and "join --code CODE" in line and "did not accept" in line


async def test_join_again_with_the_host_down_says_to_pair(no_agent: list[Any]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = _cfg(port)
    credentials.save(cfg.paths().credentials, Credentials("", "", TOKEN, "", "127.0.0.1"))
    start = time.monotonic()
    with pytest.raises(LanrayError, match=r"refused the connection.*join --code CODE"):
        await asyncio.to_thread(lifecycle.join_again, cfg, None)
    assert time.monotonic() - start < 5 and no_agent == []


def test_token_guard_waits_after_its_limit() -> None:
    clock = FakeClock()
    guard = TokenGuard(per_source=2, backoff_s=10, clock=clock)
    guard.fail("a")
    assert guard.refusal("a") is None
    guard.fail("a")
    assert (
        guard.refusal("a") == "too many failed token attempts from this address: try again in 10 s"
    )
    assert guard.refusal("b") is None
    clock.now += 10
    assert guard.refusal("a") is None  # one more try ...
    guard.fail("a")
    assert guard.refusal("a") is not None  # ... and it waits again
    assert guard.failures_by_source() == [{"source": "a", "count": 3}]
