"""The pairing protocol's messages and crypto: frames, the hello, the SPAKE2 and key
derivation steps, the confirmation tags, the sealed frames and the refusals a host may send.

No I/O and no flow here: :mod:`lanray_tui.core.pairing` runs the host's and the joiner's
side of an exchange with these pieces, and its docstring says what counts as a guess.

Frames are a 4-byte big-endian length and a body (JSON or raw bytes), at most 64 KiB:

1. joiner -> host: hello ``{"v": 3, "mode": "code"|"token", "cluster_id": ...,
   "node_name": ...}``, then SPAKE2 A msg. The SPAKE2 password is ``mode:secret``: the live
   join code, or the cluster token (``mode: "token"``, for scripts)
2. host -> joiner: SPAKE2 B msg
3. both: K = SPAKE2 finish; HKDF-SHA256 with salt = SHA-256 of the transcript (the three
   frames above, as sent) gives a confirm key and a seal key
4. joiner -> host: HMAC(confirm, b"joiner" + transcript hash), then at once nonce +
   ChaCha20Poly1305(seal) of its certificate signing request (PEM) with associated data
   ``b"lanray-csr-v1"``. On a tag mismatch the host sends ``{"ok": false, "error": "wrong
   code"}`` (``"wrong token"``) and stops, having sent nothing derived from K and read
   nothing after the tag
5. host -> joiner: HMAC(confirm, b"host" + transcript hash), then nonce +
   ChaCha20Poly1305(seal) of the credentials JSON, with the node's certificate (``cert``) and
   the CA's (``ca``), with associated data ``b"lanray-creds-v1"``. The two sealed frames have
   their own random nonces and different associated data, so neither can be reflected as
   the other
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_B

from lanray_tui.core.errors import LanrayError

PAIRING_VERSION = (
    3  # 2: keys and tags bound to the transcript; 3: CSR in, certificate out, token mode
)
MAX_FRAME = 64 * 1024
_LEN = struct.Struct(">I")
_ID_JOINER = b"lanray joiner v1"
_ID_HOST = b"lanray host v1"
_AAD = b"lanray-creds-v1"  # the host's sealed credentials
_AAD_CSR = b"lanray-csr-v1"  # the joiner's sealed signing request
_AEAD_TAG_LEN = 16
_NONCE_LEN = 12
_MAC_LEN = 32
_SPAKE_MSG_LEN = 33  # a side byte and an Ed25519 group element
_MAX_NAME = 64
_WRONG_CODE = "wrong code"
_WRONG_TOKEN = "wrong token"
_BAD_CSR = "bad signing request"
MODES = ("code", "token")
_HELLO_FIELDS = frozenset({"v", "mode", "cluster_id", "node_name"})
_CODE_EXPIRED = "code expired"
_OLD_VERSION = "unsupported pairing version: use the same lanray-tui version as the host"


class PairingError(LanrayError):
    """Pairing failed; the message is one line for the user."""


class _BadPeer(Exception):
    """Internal: the other side sent something we do not accept."""


class _Version(_BadPeer):
    """Internal: a hello of another pairing version."""


def _frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _error_frame(error: str) -> bytes:
    return _frame(_json_bytes({"ok": False, "error": error}))


def _transcript(hello: bytes, msg_a: bytes, msg_b: bytes) -> bytes:
    """SHA-256 of the three frames as sent: the keys and tags are bound to them all."""
    return hashlib.sha256(_frame(hello) + _frame(msg_a) + _frame(msg_b)).digest()


def _derive(key: bytes, transcript: bytes) -> tuple[bytes, bytes]:
    confirm = HKDF(SHA256(), 32, transcript, b"lanray confirm").derive(key)
    seal = HKDF(SHA256(), 32, transcript, b"lanray seal").derive(key)
    return confirm, seal


def _confirm_tag(confirm_key: bytes, side: bytes, transcript: bytes) -> bytes:
    return hmac.new(confirm_key, side + transcript, hashlib.sha256).digest()


def _password(mode: str, secret: str) -> bytes:
    """The SPAKE2 password: the secret, bound to what kind of secret it is."""
    return f"{mode}:{secret}".encode()


def _seal(key: bytes, aad: bytes, plain: bytes) -> bytes:
    """nonce + ChaCha20Poly1305 of ``plain``: a random nonce for each of the two sealed frames
    of an exchange (and associated data that says which one it is)."""
    nonce = os.urandom(_NONCE_LEN)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plain, aad)


def _unseal(key: bytes, aad: bytes, sealed: bytes) -> bytes | None:
    """What :func:`_seal` sealed, or None if it does not decrypt (or is too short)."""
    if len(sealed) < _NONCE_LEN + _AEAD_TAG_LEN:
        return None
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:_NONCE_LEN], sealed[_NONCE_LEN:], aad)
    except InvalidTag:
        return None


def _host_spake(password: bytes, msg_a: bytes) -> tuple[bytes, bytes]:
    """The host's SPAKE2 work (blocking, ~30 ms): its message and the shared key."""
    spake = SPAKE2_B(password, idA=_ID_JOINER, idB=_ID_HOST)
    msg_b = spake.start()
    try:
        return msg_b, spake.finish(msg_a)
    except Exception as e:
        raise _BadPeer(f"bad SPAKE2 message: {e!r}") from None


def _printable_line(value: str, limit: int = 80) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in value[:limit])


def _is_name(value: object) -> bool:
    # Names end up on a terminal: control characters could rewrite the screen.
    return isinstance(value, str) and 1 <= len(value) <= _MAX_NAME and value.isprintable()


def _parse_hello(body: bytes) -> dict[str, Any]:
    try:
        hello = json.loads(body)
    except (ValueError, RecursionError):
        raise _BadPeer("hello is not JSON") from None
    if not isinstance(hello, dict):
        raise _BadPeer("hello has the wrong fields")
    # The version first: another version's hello may well have other fields.
    version = hello.get("v")
    if "v" in hello and (type(version) is not int or version != PAIRING_VERSION):
        raise _Version(f"unsupported version {version!r}")
    if set(hello) != _HELLO_FIELDS:
        raise _BadPeer("hello has the wrong fields")
    cluster_id, node_name = hello["cluster_id"], hello["node_name"]
    if hello["mode"] not in MODES:
        raise _BadPeer("bad mode")
    if not _is_name(node_name):
        raise _BadPeer("bad node_name")
    if cluster_id is not None and (not isinstance(cluster_id, str) or len(cluster_id) > _MAX_NAME):
        raise _BadPeer("bad cluster_id")
    return hello


def _raise_if_refused(body: bytes) -> None:
    """Turn the host's clear-text failure frame, if that is what ``body`` is, into an error."""
    if not body.startswith(b"{"):
        return
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):
        return
    if not isinstance(reply, dict) or reply.get("ok") is not False:
        return
    error = reply.get("error")
    if error == _WRONG_CODE:
        raise PairingError("wrong join code")
    if error == _WRONG_TOKEN:
        raise PairingError("the host did not accept this token (wrong token, or another cluster)")
    if error == _CODE_EXPIRED:
        raise PairingError("join code expired; ask the host for its current code")
    if isinstance(error, str) and error.startswith(("pairing is ", "too many failed", "unsupp")):
        raise PairingError(f"host refused pairing: {_printable_line(error, 120)}")
    raise PairingError(f"host refused pairing: {_printable_line(str(error))}")
