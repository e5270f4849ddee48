"""Ray's TLS settings for this node: every Ray process, driver and client of the cluster
speaks Ray's gRPC over mutual TLS with this node's certificate (:mod:`.cluster_ca`).

Ray without them would start, or connect, in clear: there is no such fallback. A node that
has no certificate of its cluster gets one line saying so, and Ray does not start.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .cluster_ca import NodeTls
from .errors import LanrayError

NO_CERTIFICATE = "this node has no certificate of the cluster: pair again with a code"


class NoCertificate(LanrayError):
    """This node lacks its key, its certificate or the cluster CA's certificate."""


def ray_env(tls_dir: Path) -> dict[str, str]:
    """``RAY_USE_TLS`` and the three file paths for a Ray process or client on this node."""
    tls = NodeTls(tls_dir)
    if not tls.ready():
        raise NoCertificate(NO_CERTIFICATE)
    return tls.ray_env()


def pem_files(tls_dir: Path) -> dict[str, bytes]:
    """The node's certificate, key and CA certificate by Ray's variable name (to hand them to
    a container, whose user cannot read the node's own key file)."""
    env = ray_env(tls_dir)
    try:
        return {k: Path(v).read_bytes() for k, v in env.items() if k != "RAY_USE_TLS"}
    except OSError as exc:
        raise NoCertificate(f"{NO_CERTIFICATE} ({exc.strerror}: {exc.filename})") from None


def digest(tls_dir: Path) -> str:
    """A hash of the node's certificate, key and CA certificate ("" without them): a Ray that
    runs with other files (or none) is not this node's to adopt."""
    try:
        pems = pem_files(tls_dir)
    except NoCertificate:
        return ""
    h = hashlib.sha256()
    for var in sorted(pems):
        h.update(var.encode() + b"=" + hashlib.sha256(pems[var]).digest())
    return h.hexdigest()
