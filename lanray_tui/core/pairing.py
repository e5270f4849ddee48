"""Pairing: a joiner proves it knows the host's join code and gets the cluster credentials.

SPAKE2 turns the short code into a strong shared key without the code crossing the wire, and
an eavesdropper or a fake host learns nothing it could test guesses against offline. Each
connection is one online guess; :class:`~lanray_tui.core.joincode.CodeBook` burns a code after
a few wrong ones.

Frames are a 4-byte big-endian length and a body (JSON or raw bytes), at most 64 KiB:

1. joiner -> host: hello ``{"v": 1, "cluster_id": ..., "node_name": ...}``, then SPAKE2 A msg
2. host -> joiner: SPAKE2 B msg
3. both: K = SPAKE2 finish; HKDF-SHA256 (salt = SHA-256 of the hello frame, so the hello cannot
   be altered in transit) gives a confirm key and a seal key
4. joiner -> host: HMAC(confirm, b"joiner"); on a mismatch the host sends
   ``{"ok": false, "error": "wrong code"}`` and stops, having sent nothing derived from K
5. host -> joiner: HMAC(confirm, b"host"), then nonce + ChaCha20Poly1305(seal) of the
   credentials JSON with associated data ``b"lanray-creds-v1"``
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B

from lanray_tui.core import joincode
from lanray_tui.core.errors import LanrayError

log = logging.getLogger(__name__)

PAIRING_VERSION = 1
MAX_FRAME = 64 * 1024
_LEN = struct.Struct(">I")
_ID_JOINER = b"lanray joiner v1"
_ID_HOST = b"lanray host v1"
_AAD = b"lanray-creds-v1"
_NONCE_LEN = 12
_MAC_LEN = 32
_MAX_NAME = 64
_WRONG_CODE = "wrong code"
_CODE_EXPIRED = "code expired"


class PairingError(LanrayError):
    """Pairing failed; the message is one line for the user."""


class _BadPeer(Exception):
    """Internal: the other side sent something we do not accept."""


def _frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _error_frame(error: str) -> bytes:
    return _frame(_json_bytes({"ok": False, "error": error}))


def _derive(key: bytes, hello: bytes) -> tuple[bytes, bytes]:
    salt = hashlib.sha256(hello).digest()
    confirm = HKDF(SHA256(), 32, salt, b"lanray confirm").derive(key)
    seal = HKDF(SHA256(), 32, salt, b"lanray seal").derive(key)
    return confirm, seal


def _confirm_tag(confirm_key: bytes, side: bytes) -> bytes:
    return hmac.new(confirm_key, side, hashlib.sha256).digest()


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
        raise _BadPeer(f"unsupported version {version!r}")
    if not _is_name(node_name):
        raise _BadPeer("bad node_name")
    if cluster_id is not None and (not isinstance(cluster_id, str) or len(cluster_id) > _MAX_NAME):
        raise _BadPeer("bad cluster_id")
    return hello


# ---------------------------------------------------------------------------- host side


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if length > MAX_FRAME:
        raise _BadPeer(f"frame of {length} bytes")
    return await reader.readexactly(length)


async def _serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    code_for_attempt: Callable[[], str],
    on_success: Callable[[dict[str, Any]], dict[str, Any]],
    on_failure: Callable[[], None],
) -> bool:
    hello_bytes = await _read_frame(reader)
    try:
        hello = _parse_hello(hello_bytes)
    except _BadPeer:
        writer.write(_error_frame("bad hello"))
        await writer.drain()
        raise
    msg_a = await _read_frame(reader)
    code = joincode.normalize(code_for_attempt())
    spake = SPAKE2_B(code.encode(), idA=_ID_JOINER, idB=_ID_HOST)
    writer.write(_frame(spake.start()))
    await writer.drain()
    try:
        key = spake.finish(msg_a)
    except Exception as e:
        raise _BadPeer(f"bad SPAKE2 message: {e!r}") from None
    confirm_key, seal_key = _derive(key, hello_bytes)

    tag = await _read_frame(reader)
    if not hmac.compare_digest(tag, _confirm_tag(confirm_key, b"joiner")):
        # Count first: a joiner that hangs up at once must still use up a guess.
        on_failure()
        writer.write(_error_frame(_WRONG_CODE))
        await writer.drain()
        log.debug("pairing: wrong code from %r", hello["node_name"])
        return False
    # Parallel connections all start with the same code; if wrong guesses on the others burned
    # it meanwhile, this one must not succeed with it.
    if joincode.normalize(code_for_attempt()) != code:
        writer.write(_error_frame(_CODE_EXPIRED))
        await writer.drain()
        return False

    try:
        credentials = on_success(hello)
    except Exception:
        writer.write(_error_frame("host could not issue credentials"))
        await writer.drain()
        raise
    nonce = os.urandom(_NONCE_LEN)
    sealed = ChaCha20Poly1305(seal_key).encrypt(nonce, _json_bytes(credentials), _AAD)
    if len(nonce) + len(sealed) > MAX_FRAME:
        raise ValueError("credentials too large for one frame")
    writer.write(_frame(_confirm_tag(confirm_key, b"host")) + _frame(nonce + sealed))
    await writer.drain()
    return True


async def serve_pairing(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    code_for_attempt: Callable[[], str],
    on_success: Callable[[dict[str, Any]], dict[str, Any]],
    on_failure: Callable[[], None],
    timeout: float = 10.0,
) -> bool:
    """Run the host side of one pairing connection, then close it; True if the joiner paired.

    ``code_for_attempt()`` gives the host's current code; ``on_success(hello)`` returns the
    credentials to send; ``on_failure()`` is called on a wrong code. Never raises on bad input
    (bad frames, oversize, timeout, disconnect): it logs at debug level and closes.
    """
    peer = writer.get_extra_info("peername")
    try:
        return await asyncio.wait_for(
            _serve(reader, writer, code_for_attempt, on_success, on_failure), timeout
        )
    except asyncio.TimeoutError:
        log.debug("pairing: %s timed out", peer)
    except (asyncio.IncompleteReadError, ConnectionError):
        log.debug("pairing: %s closed the connection", peer)
    except _BadPeer as e:
        log.debug("pairing: %s sent bad data: %s", peer, e)
    except Exception:
        # The listener must survive anything one connection does, bugs in callbacks included.
        log.debug("pairing: %s failed", peer, exc_info=True)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return False


# -------------------------------------------------------------------------- joiner side


class _Conn:
    """A blocking socket with one deadline for the whole exchange."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise PairingError("pairing timed out")
        self.sock.settimeout(remaining)

    def send(self, body: bytes) -> None:
        self._arm()
        self.sock.sendall(_frame(body))

    def _recv_exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            self._arm()
            chunk = self.sock.recv(min(n, 65536))
            if not chunk:
                raise PairingError("host closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> bytes:
        (length,) = _LEN.unpack(self._recv_exactly(_LEN.size))
        if length > MAX_FRAME:
            raise PairingError("bad reply from host (frame too large)")
        body = self._recv_exactly(length)
        _raise_if_refused(body)
        return body


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
    raise PairingError(f"host refused pairing: {_printable_line(str(error))}")


def _exchange(conn: _Conn, code: str, node_name: str, cluster_id: str | None) -> dict[str, Any]:
    hello = _json_bytes({"v": PAIRING_VERSION, "cluster_id": cluster_id, "node_name": node_name})
    spake = SPAKE2_A(code.encode(), idA=_ID_JOINER, idB=_ID_HOST)
    conn.send(hello)
    conn.send(spake.start())
    msg_b = conn.recv()
    try:
        key = spake.finish(msg_b)
    except Exception:
        raise PairingError("bad reply from host (key exchange failed)") from None
    confirm_key, seal_key = _derive(key, hello)
    conn.send(_confirm_tag(confirm_key, b"joiner"))
    if not hmac.compare_digest(conn.recv(), _confirm_tag(confirm_key, b"host")):
        raise PairingError("host failed key confirmation; it may not be the real host")
    sealed = conn.recv()
    try:
        plain = ChaCha20Poly1305(seal_key).decrypt(sealed[:_NONCE_LEN], sealed[_NONCE_LEN:], _AAD)
        credentials = json.loads(plain)
    except (InvalidTag, ValueError):
        raise PairingError("bad reply from host (credentials do not decrypt)") from None
    if not isinstance(credentials, dict):
        raise PairingError("bad reply from host (credentials are not an object)")
    if cluster_id is not None and credentials.get("cluster_id") != cluster_id:
        raise PairingError("host answered for a different cluster than the one asked for")
    return credentials


def pair(
    host: str,
    port: int,
    code: str,
    *,
    node_name: str,
    cluster_id: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Pair with the host at ``host:port`` using join ``code``; return the cluster credentials.

    Blocking: the CLI calls it directly, the TUI from a thread worker. ``timeout`` bounds the
    whole exchange. Raises :class:`PairingError` with one line on any failure.
    """
    if not joincode.is_valid(code):
        # Catch typos here: a malformed code would only burn one of the host's few guesses.
        raise PairingError(f"{code.strip()!r} is not a join code (they look like 7-tiger-canvas)")
    if not _is_name(node_name):
        raise PairingError("the node name must be 1-64 printable characters")
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise PairingError(f"{host}:{port} refused the connection") from None
    except TimeoutError:
        raise PairingError(f"{host}:{port} did not answer (timed out)") from None
    except OSError as e:
        raise PairingError(f"cannot reach {host}:{port}: {e.strerror or e}") from None
    with sock:
        try:
            return _exchange(_Conn(sock, deadline), joincode.normalize(code), node_name, cluster_id)
        except TimeoutError:
            raise PairingError("pairing timed out") from None
        except OSError as e:
            raise PairingError(f"connection to {host}:{port} failed: {e.strerror or e}") from None
