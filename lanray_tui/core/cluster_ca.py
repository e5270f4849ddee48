"""The cluster's certificate authority: who may speak TLS inside one cluster.

The host makes a CA when it creates the cluster. Every node has its own key pair, made on the
node and never sent anywhere, and a certificate for it that the host's CA signed: a joiner
sends a signing request inside the SPAKE2-sealed pairing channel and gets its certificate and
the CA certificate back the same way (:mod:`.pairing`). With them, Ray's gRPC
(``RAY_USE_TLS``) and the cluster API run over mutual TLS: a process without a certificate of
this cluster cannot speak to any of them.

A node's certificate names its IP addresses (and loopback) in subjectAltName, since gRPC and
the cluster API check the address they dialled against it.

Files (under ``Paths.tls_dir``, mode 0700; keys mode 0600)::

    ca.pem     the CA certificate (every node)
    ca.key     the CA key (the host only)
    node.key   this node's key
    node.pem   this node's certificate, signed by the CA
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import LanrayError

CA_DAYS = 3650
NODE_DAYS = 825
MAX_IPS = 8
MAX_CSR_BYTES = 4096
LOOPBACK = ("127.0.0.1",)


class CertError(LanrayError):
    """A certificate, key or signing request that cannot be used, with the reason in one line."""


# ----- pieces ---------------------------------------------------------------------------------


def new_key_pem() -> bytes:
    """A fresh EC P-256 private key (PEM, unencrypted: the file mode protects it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"not a usable private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError("not an EC private key")
    return key


def _name(common_name: str, cluster_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"lanray-tui cluster {cluster_id}"[:64]),
            x509.NameAttribute(NameOID.COMMON_NAME, (common_name or "node")[:64]),
        ]
    )


def new_ca(cluster_id: str, cluster_name: str) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) of a new cluster CA."""
    key_pem = new_key_pem()
    key = _load_key(key_pem)
    name = _name(f"{cluster_name} CA", cluster_id)
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def make_csr(key_pem: bytes, node_name: str, ips: Iterable[str]) -> bytes:
    """A signing request for ``key_pem`` naming the node and its IP addresses."""
    key = _load_key(key_pem)
    addresses = _ip_list(ips)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(node_name, "request"))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(a) for a in addresses]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _ip_list(ips: Iterable[str | ipaddress.IPv4Address]) -> list[ipaddress.IPv4Address]:
    out: list[ipaddress.IPv4Address] = []
    for raw in [*ips, *LOOPBACK]:
        try:
            ip = ipaddress.IPv4Address(str(raw))
        except ValueError:
            raise CertError(f"'{raw}' is not an IPv4 address") from None
        if ip not in out:
            out.append(ip)
    if len(out) > MAX_IPS:
        raise CertError(f"a node certificate names at most {MAX_IPS} addresses")
    return out


def sign(ca_key_pem: bytes, ca_cert_pem: bytes, csr_pem: bytes, days: int = NODE_DAYS) -> bytes:
    """The CA's certificate for a node's signing request (PEM).

    The request must be well formed, signed by its own key (proof that the node holds it)
    and name only IPv4 addresses; anything else raises :class:`CertError`. The certificate is
    good for both TLS sides (every node is a server and a client) and never for signing."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CertError("the signing request is too large")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CertError("not a certificate signing request") from None
    if not csr.is_signature_valid:
        raise CertError("the signing request's signature does not verify")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CertError("the signing request's key is not an EC key")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    if san.get_values_for_type(x509.DNSName) or san.get_values_for_type(x509.RFC822Name):
        raise CertError("a node certificate names IP addresses only")
    ips = _ip_list(str(a) for a in san.get_values_for_type(x509.IPAddress))
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = str(cns[0].value) if cns else "node"
    common = "".join(ch for ch in common if ch.isprintable())[:64] or "node"
    ca_key = _load_key(ca_key_pem)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    *ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
                    x509.NameAttribute(NameOID.COMMON_NAME, common),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(a) for a in ips]), False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_ips(cert_pem: bytes) -> list[str]:
    """The IP addresses a certificate names."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(a) for a in san.get_values_for_type(x509.IPAddress)]


def check_pair(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
    """Raise :class:`CertError` unless ``cert_pem`` is ``key_pem``'s, signed by ``ca_pem``,
    and valid now."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        raise CertError("not a PEM certificate") from None
    key = _load_key(key_pem)
    if cert.public_key() != key.public_key():
        raise CertError("the certificate is not for this node's key")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as exc:
        raise CertError(f"the certificate is not signed by the cluster CA ({exc})") from None
    now = dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertError("the certificate is not valid now")


# ----- one node's files -----------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@dataclass(frozen=True)
class NodeTls:
    """One node's TLS files: its key and certificate, the CA's certificate and, on the host,
    the CA's key."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def cert(self) -> Path:
        return self.folder / "node.pem"

    @property
    def key(self) -> Path:
        return self.folder / "node.key"

    def ready(self) -> bool:
        """Whether this node has a key, a certificate and the CA certificate."""
        return all(p.is_file() for p in (self.ca_cert, self.cert, self.key))

    def ray_env(self) -> dict[str, str]:
        """Ray's own TLS settings: every Ray process, driver and client of the cluster."""
        return {
            "RAY_USE_TLS": "1",
            "RAY_TLS_SERVER_CERT": str(self.cert),
            "RAY_TLS_SERVER_KEY": str(self.key),
            "RAY_TLS_CA_CERT": str(self.ca_cert),
        }

    # -- the host

    def ensure_ca(self, cluster_id: str, cluster_name: str) -> None:
        """Make the cluster's CA unless this node has the one of ``cluster_id`` already."""
        if self.ca_key.is_file() and self.ca_cert.is_file():
            ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            orgs = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
            if orgs and str(orgs[0].value).endswith(cluster_id):
                return
        key_pem, cert_pem = new_ca(cluster_id, cluster_name)
        _write(self.ca_key, key_pem, 0o600)
        _write(self.ca_cert, cert_pem, 0o644)
        for stale in (self.cert, self.key):
            stale.unlink(missing_ok=True)

    def sign(self, csr_pem: bytes) -> bytes:
        """Sign a node's request with this host's CA."""
        return sign(self.ca_key.read_bytes(), self.ca_cert.read_bytes(), csr_pem)

    def issue_own(self, node_name: str, ips: Sequence[str]) -> None:
        """The host's own certificate, for the addresses it has now (made again when they
        change, or when the CA is new)."""
        if self.ready() and self.covers(ips):
            try:
                check_pair(self.key.read_bytes(), self.cert.read_bytes(), self.ca_cert.read_bytes())
                return
            except CertError:
                pass
        key_pem = self.key.read_bytes() if self.key.is_file() else new_key_pem()
        try:
            csr = make_csr(key_pem, node_name, ips)
        except CertError:
            key_pem = new_key_pem()
            csr = make_csr(key_pem, node_name, ips)
        _write(self.key, key_pem, 0o600)
        _write(self.cert, self.sign(csr), 0o644)

    # -- a joiner

    def request(self, node_name: str, ips: Sequence[str]) -> bytes:
        """A signing request for this node's key (made now if it has none)."""
        if not self.key.is_file():
            _write(self.key, new_key_pem(), 0o600)
        return make_csr(self.key.read_bytes(), node_name, ips)

    def store(self, cert_pem: bytes, ca_pem: bytes) -> None:
        """Keep the certificate and CA the host sent, after checking they fit this key."""
        check_pair(self.key.read_bytes(), cert_pem, ca_pem)
        _write(self.ca_cert, ca_pem, 0o644)
        _write(self.cert, cert_pem, 0o644)

    def covers(self, ips: Iterable[str]) -> bool:
        """Whether this node's certificate names every address in ``ips``."""
        if not self.cert.is_file():
            return False
        try:
            have = set(cert_ips(self.cert.read_bytes()))
        except ValueError:
            return False
        return all(ip in have for ip in ips)

    # -- TLS contexts

    def server_context(self) -> ssl.SSLContext:
        """For the cluster API: a client must show a certificate of this cluster's CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(cafile=str(self.ca_cert))
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """For talking to the host: its certificate must be this cluster's and name the
        address dialled; this node shows its own."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(cafile=str(self.ca_cert))
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
