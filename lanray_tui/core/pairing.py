"""Pairing: a joiner proves it knows the host's join code and gets the cluster credentials.

SPAKE2 turns the short code into a strong shared key without the code crossing the wire, and
an eavesdropper or a fake host learns nothing it could test guesses against offline. Each
connection is one online guess; :class:`~lanray_tui.core.joincode.CodeBook` decides whether
pairing is open at all and keeps the host-wide budget of failed attempts.

The frames, keys and tags of an exchange are described in
:mod:`lanray_tui.core.pairing_wire`.

What counts as a guess, and why. The host cannot tell a wrong code from a random tag: both
are a key confirmation that does not verify, and that indistinguishability is what stops
offline guessing. So the only thing that counts as a failure is a tag that does not verify
at the end of a full, fresh exchange; everything a peer can send more cheaply is dropped and
costs nothing:

- no live code, a locked or backing-off budget, a source over its limit, too many open
  connections: refused before any SPAKE2 work (``PairingService``);
- a bad hello, a SPAKE2 message that is not 33 bytes or not a group element, a SPAKE2 message
  seen before (a replay, dropped whether or not its first use paired), a tag that is not
  32 bytes, a hang-up before the tag: dropped, not counted;
- the keys are bound to the whole transcript, so a tag from another exchange never verifies
  and a replayed exchange cannot be completed.

A peer can still send a fresh group element and 32 random bytes and get one failure
counted; that costs it a TCP connection per failure and is what the budget is for. Failures
never burn the code: each counts against its source address (``per_source``, then that
address alone is refused) and against the host-wide budget (backoff, then ``LOCKED`` until
the owner issues a new code). A stranger with one address cannot shut pairing for anyone
else; one with many addresses can spend the host-wide budget, which the owner sees as
"N failed pairing attempts from ...", but cannot guess the code faster than the budget lets
anyone (see the README's Security section).

Whether a tag may be checked is asked again just before checking it, in the same event-loop
step that records the failure, so parallel connections cannot go past any limit. The SPAKE2
arithmetic (pure Python, about 15 ms a side) runs in a thread of its own, never on the event
loop, so a flood on the pairing port cannot delay heartbeats or the control socket.

The messages and the crypto are :mod:`lanray_tui.core.pairing_wire`; this module runs the
flow of each side (the host's :func:`serve_pairing`, the joiner's :func:`pair`).
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
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from spake2 import SPAKE2_A

from lanray_tui.core import joincode
from lanray_tui.core.joincode import CodeBook
from lanray_tui.core.pairing_wire import (
    _AAD,
    _CODE_EXPIRED,
    _ID_HOST,
    _ID_JOINER,
    _LEN,
    _MAC_LEN,
    _NONCE_LEN,
    _OLD_VERSION,
    _SPAKE_MSG_LEN,
    _WRONG_CODE,
    MAX_FRAME,
    PAIRING_VERSION,
    PairingError,
    _BadPeer,
    _confirm_tag,
    _derive,
    _error_frame,
    _frame,
    _host_spake,
    _is_name,
    _json_bytes,
    _parse_hello,
    _raise_if_refused,
    _transcript,
    _Version,
)

__all__ = [
    "MAX_FRAME",
    "PAIRING_VERSION",
    "PairingError",
    "ReplayGuard",
    "pair",
    "refuse",
    "serve_pairing",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
RunBlocking = Callable[[Callable[[], T]], Awaitable[T]]


class ReplayGuard:
    """Remembers the last ``size`` SPAKE2 messages seen (as digests) to drop replays."""

    def __init__(self, size: int = 16384) -> None:
        self.size = size
        self.replays = 0
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def fresh(self, message: bytes) -> bool:
        """True the first time ``message`` is seen; it is remembered either way."""
        digest = hashlib.sha256(message).digest()[:16]
        if digest in self._seen:
            self._seen.move_to_end(digest)
            self.replays += 1
            return False
        self._seen[digest] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


# ---------------------------------------------------------------------------- host side


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if length > MAX_FRAME:
        raise _BadPeer(f"frame of {length} bytes")
    return await reader.readexactly(length)


async def _in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _read_offer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replay: ReplayGuard
) -> tuple[bytes, dict[str, Any], bytes]:
    """The joiner's hello (as sent and parsed) and its SPAKE2 message, which must be fresh.

    Raises :class:`_BadPeer` for anything else; a bad hello is answered first.
    """
    hello_bytes = await _read_frame(reader)
    try:
        hello = _parse_hello(hello_bytes)
    except _BadPeer as e:
        await _send(writer, _error_frame(_OLD_VERSION if isinstance(e, _Version) else "bad hello"))
        raise
    msg_a = await _read_frame(reader)
    if len(msg_a) != _SPAKE_MSG_LEN:
        raise _BadPeer(f"SPAKE2 message of {len(msg_a)} bytes")
    if not replay.fresh(msg_a):
        raise _BadPeer("replayed SPAKE2 message")
    return hello_bytes, hello, msg_a


async def _serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    book: CodeBook,
    source: str,
    on_success: Callable[[dict[str, Any]], dict[str, Any]],
    replay: ReplayGuard,
    run_blocking: RunBlocking[tuple[bytes, bytes]],
) -> bool:
    hello_bytes, hello, msg_a = await _read_offer(reader, writer, replay)
    code = book.live()
    reason = book.refusal(source)
    if code is None or reason is not None:
        await _send(writer, _error_frame(reason or "pairing is closed"))
        return False
    code = joincode.normalize(code)
    msg_b, key = await run_blocking(lambda: _host_spake(code, msg_a))
    transcript = _transcript(hello_bytes, msg_a, msg_b)
    confirm_key, seal_key = _derive(key, transcript)
    await _send(writer, _frame(msg_b))

    tag = await _read_frame(reader)
    if len(tag) != _MAC_LEN:
        raise _BadPeer(f"confirmation of {len(tag)} bytes")
    # Asked again now: parallel attempts, or the owner, may have changed things meanwhile. No
    # await from here to the count, so no other connection can slip in between.
    reason = book.refusal(source)
    if reason is not None or joincode.normalize(book.live() or "") != code:
        await _send(writer, _error_frame(reason or _CODE_EXPIRED))
        return False
    if not hmac.compare_digest(tag, _confirm_tag(confirm_key, b"joiner", transcript)):
        # Count first: a joiner that hangs up at once must still use up a guess.
        book.fail(source)
        await _send(writer, _error_frame(_WRONG_CODE))
        log.debug("pairing: wrong code from %s (%r)", source, hello["node_name"])
        return False
    book.use()
    await _send_credentials(writer, hello, on_success, confirm_key, seal_key, transcript)
    return True


async def _send_credentials(
    writer: asyncio.StreamWriter,
    hello: dict[str, Any],
    on_success: Callable[[dict[str, Any]], dict[str, Any]],
    confirm_key: bytes,
    seal_key: bytes,
    transcript: bytes,
) -> None:
    """The host's tag, then the credentials sealed with the seal key (the joiner paired)."""
    try:
        credentials = on_success(hello)
    except Exception:
        await _send(writer, _error_frame("host could not issue credentials"))
        raise
    nonce = os.urandom(_NONCE_LEN)
    sealed = ChaCha20Poly1305(seal_key).encrypt(nonce, _json_bytes(credentials), _AAD)
    if len(nonce) + len(sealed) > MAX_FRAME:
        raise ValueError("credentials too large for one frame")
    await _send(
        writer, _frame(_confirm_tag(confirm_key, b"host", transcript)) + _frame(nonce + sealed)
    )


async def serve_pairing(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    book: CodeBook,
    source: str,
    on_success: Callable[[dict[str, Any]], dict[str, Any]],
    replay: ReplayGuard,
    run_blocking: RunBlocking[tuple[bytes, bytes]] = _in_thread,
    timeout: float = 10.0,
) -> bool:
    """Run the host side of one pairing connection from ``source``, then close it; True if
    the joiner paired.

    ``book`` says whether pairing is open and counts the outcome; ``on_success(hello)``
    returns the credentials to send; ``run_blocking`` runs the SPAKE2 arithmetic off the
    event loop. Never raises on bad input (bad frames, oversize, timeout, disconnect): it logs
    at debug level and closes.
    """
    try:
        return await asyncio.wait_for(
            _serve(reader, writer, book, source, on_success, replay, run_blocking), timeout
        )
    except asyncio.TimeoutError:
        log.debug("pairing: %s timed out", source)
    except (asyncio.IncompleteReadError, ConnectionError):
        log.debug("pairing: %s closed the connection", source)
    except _BadPeer as e:
        log.debug("pairing: %s sent bad data: %s", source, e)
    except Exception:
        # The listener must survive anything one connection does, bugs in callbacks included.
        log.debug("pairing: %s failed", source, exc_info=True)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return False


async def _drain_input(reader: asyncio.StreamReader) -> None:
    while await reader.read(MAX_FRAME):
        pass


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reason: str) -> None:
    """Tell a joiner why pairing is refused and close, with no SPAKE2 work.

    What the joiner already sent is read (for at most a second) before closing: closing
    with unread data would reset the connection and lose the reason on the way.
    """
    try:
        writer.write(_error_frame(reason))
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(_drain_input(reader), 1.0)
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


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


def _exchange(conn: _Conn, code: str, node_name: str, cluster_id: str | None) -> dict[str, Any]:
    hello = _json_bytes({"v": PAIRING_VERSION, "cluster_id": cluster_id, "node_name": node_name})
    spake = SPAKE2_A(code.encode(), idA=_ID_JOINER, idB=_ID_HOST)
    conn.send(hello)
    msg_a = spake.start()
    conn.send(msg_a)
    msg_b = conn.recv()
    try:
        key = spake.finish(msg_b)
    except Exception:
        raise PairingError("bad reply from host (key exchange failed)") from None
    transcript = _transcript(hello, msg_a, msg_b)
    confirm_key, seal_key = _derive(key, transcript)
    conn.send(_confirm_tag(confirm_key, b"joiner", transcript))
    if not hmac.compare_digest(conn.recv(), _confirm_tag(confirm_key, b"host", transcript)):
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
