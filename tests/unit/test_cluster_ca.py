"""The cluster CA: what it signs, what it refuses, and mutual TLS with its certificates."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from lanray_tui.core import cluster_ca
from lanray_tui.core.cluster_ca import CertError, NodeTls


@pytest.fixture
def host(tmp_path: Path) -> NodeTls:
    tls = NodeTls(tmp_path / "host")
    tls.ensure_ca("c0ffee", "lab")
    tls.issue_own("head", ["10.0.0.1"])
    return tls


def _joined(host: NodeTls, folder: Path, ip: str = "10.0.0.2") -> NodeTls:
    node = NodeTls(folder)
    node.store(host.sign(node.request("w1", [ip])), host.ca_cert.read_bytes())
    return node


def test_a_joiner_gets_a_certificate_for_its_own_key_and_addresses(
    host: NodeTls, tmp_path: Path
) -> None:
    node = _joined(host, tmp_path / "w")
    assert node.ready() and node.covers(["10.0.0.2", "127.0.0.1"])
    assert not node.covers(["10.0.0.3"])
    assert (node.key.stat().st_mode & 0o777) == 0o600
    assert not node.ca_key.exists()  # the CA key stays on the host
    assert set(node.ray_env()) == {
        "RAY_USE_TLS",
        "RAY_TLS_SERVER_CERT",
        "RAY_TLS_SERVER_KEY",
        "RAY_TLS_CA_CERT",
    }


def test_the_ca_is_kept_for_its_cluster_and_made_anew_for_another(host: NodeTls) -> None:
    before = host.ca_cert.read_bytes()
    host.ensure_ca("c0ffee", "lab")
    assert host.ca_cert.read_bytes() == before
    host.ensure_ca("other1", "lab")
    assert host.ca_cert.read_bytes() != before
    assert not host.cert.exists()  # signed by the old CA: gone


def test_a_certificate_for_another_key_or_ca_is_refused(host: NodeTls, tmp_path: Path) -> None:
    node = NodeTls(tmp_path / "w")
    node.request("w1", ["10.0.0.2"])
    other = NodeTls(tmp_path / "o")
    other_csr = other.request("o", ["10.0.0.9"])
    with pytest.raises(CertError, match="not for this node's key"):
        node.store(host.sign(other_csr), host.ca_cert.read_bytes())
    stranger = NodeTls(tmp_path / "s")
    stranger.ensure_ca("bad", "bad")
    with pytest.raises(CertError, match="not signed by the cluster CA"):
        node.store(stranger.sign(node.request("w1", ["10.0.0.2"])), host.ca_cert.read_bytes())


@pytest.mark.parametrize(
    "csr",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        b"x" * 5000,
    ],
)
def test_malformed_signing_requests_get_one_line(host: NodeTls, csr: bytes) -> None:
    with pytest.raises(CertError):
        host.sign(csr)


def test_requests_naming_hosts_or_rsa_keys_or_too_many_addresses_are_refused(
    host: NodeTls,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    dns = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CertError, match="IP addresses only"):
        host.sign(dns.public_bytes(serialization.Encoding.PEM))
    rsa_key = rsa.generate_private_key(65537, 2048)
    plain = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(rsa_key, hashes.SHA256())
    )
    with pytest.raises(CertError, match="not an EC key"):
        host.sign(plain.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CertError, match="at most"):
        cluster_ca.make_csr(cluster_ca.new_key_pem(), "x", [f"10.0.0.{i}" for i in range(1, 10)])


def test_node_certificates_cannot_sign_others(host: NodeTls, tmp_path: Path) -> None:
    node = _joined(host, tmp_path / "w")
    cert = x509.load_pem_x509_certificate(node.cert.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_mutual_tls_needs_a_certificate_of_this_cluster(host: NodeTls, tmp_path: Path) -> None:
    node = _joined(host, tmp_path / "w")
    stranger = NodeTls(tmp_path / "s")
    stranger.ensure_ca("other", "other")
    stranger.issue_own("s", ["10.0.0.9"])

    async def main() -> tuple[bytes, bytes, bytes]:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.readline())
            await w.drain()
            w.close()

        srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=host.server_context())
        port = srv.sockets[0].getsockname()[1]

        async def say(ctx: ssl.SSLContext) -> bytes:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
                w.write(b"hello\n")
                return await r.readline()
            except (ssl.SSLError, ConnectionError):
                return b"refused"

        no_cert = ssl.create_default_context(cafile=str(host.ca_cert))
        got = (
            await say(node.client_context()),
            await say(no_cert),
            await say(stranger.client_context()),
        )
        srv.close()
        return got

    member, anonymous, foreign = asyncio.run(main())
    assert member == b"hello\n"
    assert anonymous in (b"", b"refused")
    assert foreign == b"refused"  # its CA is not ours: it does not trust the host either
