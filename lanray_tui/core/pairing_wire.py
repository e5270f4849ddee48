"""The pairing protocol's messages and crypto: frames, the hello, the SPAKE2 and key
derivation steps, the confirmation tags and the refusals a host may send.

No I/O and no flow here: :mod:`lanray_tui.core.pairing` runs the host's and the joiner's
side of an exchange with these pieces, and its docstring says what counts as a guess.

Frames are a 4-byte big-endian length and a body (JSON or raw bytes), at most 64 KiB:

1. joiner -> host: hello ``{"v": 2, "cluster_id": ..., "node_name": ...}``, then SPAKE2 A msg
2. host -> joiner: SPAKE2 B msg
3. both: K = SPAKE2 finish; HKDF-SHA256 with salt = SHA-256 of the transcript (the three
   frames above, as sent) gives a confirm key and a seal key
4. joiner -> host: HMAC(confirm, b"joiner" + transcript hash); on a mismatch the host sends
   ``{"ok": false, "error": "wrong code"}`` and stops, having sent nothing derived from K
5. host -> joiner: HMAC(confirm, b"host" + transcript hash), then nonce +
   ChaCha20Poly1305(seal) of the credentials JSON with associated data ``b"lanray-creds-v1"``
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_B

from lanray_tui.core.errors import LanrayError

PAIRING_VERSION = 2  # 2: keys and tags bound to the transcript
MAX_FRAME = 64 * 1024
_LEN = struct.Struct(">I")
_ID_JOINER = b"lanray joiner v1"
_ID_HOST = b"lanray host v1"
_AAD = b"lanray-creds-v1"
_NONCE_LEN = 12
_MAC_LEN = 32
_SPAKE_MSG_LEN = 33  # a side byte and an Ed25519 group element
_MAX_NAME = 64
_WRONG_CODE = "wrong code"
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


def _host_spake(code: str, msg_a: bytes) -> tuple[bytes, bytes]:
    """The host's SPAKE2 work (blocking, ~30 ms): its message and the shared key."""
    spake = SPAKE2_B(code.encode(), idA=_ID_JOINER, idB=_ID_HOST)
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
    if not isinstance(hello, dict) or set(hello) != {"v", "cluster_id", "node_name"}:
        raise _BadPeer("hello has the wrong fields")
    version, cluster_id, node_name = hello["v"], hello["cluster_id"], hello["node_name"]
    if type(version) is not int or version != PAIRING_VERSION:
        raise _Version(f"unsupported version {version!r}")
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
    if error == _CODE_EXPIRED:
        raise PairingError("join code expired; ask the host for its current code")
    if isinstance(error, str) and error.startswith(("pairing is ", "too many failed", "unsupp")):
        raise PairingError(f"host refused pairing: {_printable_line(error, 120)}")
    raise PairingError(f"host refused pairing: {_printable_line(str(error))}")
