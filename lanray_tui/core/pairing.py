"""Pairing: a joiner proves it knows the host's join code (or the cluster token) and gets the
cluster credentials and a certificate for its own key.

SPAKE2 turns the short code into a strong shared key without the code crossing the wire, and
an eavesdropper or a fake host learns nothing it could test guesses against offline. Each
connection is one online guess; :class:`~lanray_tui.core.joincode.CodeBook` decides whether
pairing is open at all and keeps the host-wide budget of failed attempts.

Every pairing also certifies the joiner: it makes its key pair on its own machine, sends a
signing request sealed with the exchange's key, and gets back, sealed the same way, its
certificate and the cluster CA's (:mod:`lanray_tui.core.cluster_ca`). The private key never
leaves the node.

Scripts join with the cluster token instead of a code (``mode: "token"``): the same exchange,
with the token as the SPAKE2 password, so the token never crosses the wire either. The token
is a 256-bit secret that nobody can guess online, so token attempts are not gated on a live
code and their failures do not spend the code's budget; the connection caps and the replay
guard apply the same, and failures are counted per source (:class:`TokenGuard`: past a few,
that address waits a while before its next try).

The frames, keys and tags of an exchange are described in
:mod:`lanray_tui.core.pairing_wire`.

What counts as a guess, and why. The host cannot tell a wrong code from a random tag: both
are a key confirmation that does not verify, and that indistinguishability is what stops
offline guessing. So the only thing that counts as a failure is a tag that does not verify
at the end of a full, fresh exchange; everything a peer can send more cheaply is dropped and
costs nothing:

- no live code, a locked or backing-off budget, a source over its limit: refused as soon as
  the hello has come, before any SPAKE2 work; too many open connections: closed at once
  (``PairingService``);
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
step that records the outcome, so parallel connections cannot go past any limit. A verified
tag spends one use of the code in that same step, before the signing request is read: the
joiner has proved it knows the code. A signing request that then does not decrypt, is too
large or is not one the CA signs gets one ``bad signing request`` line and no certificate;
it is not a guess (the tag verified) and the use stays spent (only a joiner that knows the
code can get there, and it can simply pair again while the code has uses left).

The SPAKE2 arithmetic (pure Python, about 15 ms a side) runs in a thread of its own, never on
the event loop, so a flood on the pairing port cannot delay heartbeats or the control socket.

The messages and the crypto are :mod:`lanray_tui.core.pairing_wire`; this module runs the
flow of each side (the host's :func:`serve_pairing`, the joiner's :func:`pair` and
:func:`pair_with_token`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from spake2 import SPAKE2_A

from lanray_tui.core import joincode
from lanray_tui.core.cluster_ca import MAX_CSR_BYTES, CertError
from lanray_tui.core.joincode import MAX_REPORTED_SOURCES, CodeBook
from lanray_tui.core.pairing_wire import (
    _AAD,
    _AAD_CSR,
    _AEAD_TAG_LEN,
    _BAD_CSR,
    _CODE_EXPIRED,
    _ID_HOST,
    _ID_JOINER,
    _LEN,
    _MAC_LEN,
    _NONCE_LEN,
    _OLD_VERSION,
    _SPAKE_MSG_LEN,
    _WRONG_CODE,
    _WRONG_TOKEN,
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
    _password,
    _raise_if_refused,
    _seal,
    _transcript,
    _unseal,
    _Version,
)

__all__ = [
    "MAX_FRAME",
    "PAIRING_VERSION",
    "OnSuccess",
    "PairingError",
    "ReplayGuard",
    "TokenGuard",
    "pair",
    "pair_with_token",
    "refuse",
    "serve_pairing",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
RunBlocking = Callable[[Callable[[], T]], Awaitable[T]]
# What the host gives a joiner that paired: (its hello, its signing request PEM) -> the
# credentials, with "cert" and "ca"; raises CertError for a request the CA does not sign.
OnSuccess = Callable[[dict[str, Any], bytes], dict[str, Any]]

_CSR_PEM = b"-----BEGIN CERTIFICATE REQUEST-----"
_MAX_SEALED_CSR = _NONCE_LEN + MAX_CSR_BYTES + _AEAD_TAG_LEN


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


class TokenGuard:
    """Failed token attempts, per source address.

    Nobody guesses a 256-bit token online, so this is not a budget against guessing: it
    keeps a count for the owner ("N failed pairing attempts from ...") and, past
    ``per_source`` failures, makes that address wait ``backoff_s`` after each further one
    (refused before any SPAKE2 work). Attempts that fail before the key confirmation (bad or
    replayed messages) are not failures here either; the connection caps bound those.
    """

    def __init__(
        self,
        per_source: int = 5,
        backoff_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_source = per_source
        self.backoff_s = backoff_s
        self.failures_total = 0
        self._clock = clock
        self._by_source: dict[str, tuple[int, float]] = {}  # count, time of the last one

    def refusal(self, source: str) -> str | None:
        """Why a token attempt from ``source`` is refused now (one line), or None."""
        count, last = self._by_source.get(source, (0, 0.0))
        wait = last + self.backoff_s - self._clock()
        if count >= self.per_source and wait > 0:
            return f"too many failed token attempts from this address: try again in {wait:.0f} s"
        return None

    def fail(self, source: str) -> None:
        self.failures_total += 1
        count, _ = self._by_source.get(source, (0, 0.0))
        if source not in self._by_source and len(self._by_source) >= MAX_REPORTED_SOURCES:
            source = "other addresses"
            count, _ = self._by_source.get(source, (0, 0.0))
        self._by_source[source] = (count + 1, self._clock())

    def failures_by_source(self) -> list[dict[str, Any]]:
        """Failed token attempts since the host started, most first."""
        ranked = sorted(self._by_source.items(), key=lambda item: (-item[1][0], item[0]))
        return [{"source": source, "count": count} for source, (count, _) in ranked]


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


async def _drain_input(reader: asyncio.StreamReader) -> None:
    while await reader.read(MAX_FRAME):
        pass


async def _answer_and_finish(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: str
) -> None:
    """Send one error line and end our side, then read what the joiner still sends (for at
    most a second): closing with unread data would reset the connection and could lose the
    line on the way."""
    try:
        writer.write(_error_frame(error))
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(_drain_input(reader), 1.0)
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass


class _Host:
    """What the host side of an exchange needs besides the connection."""

    def __init__(
        self,
        book: CodeBook,
        source: str,
        on_success: OnSuccess,
        replay: ReplayGuard,
        run_blocking: RunBlocking[tuple[bytes, bytes]],
        token: Callable[[], str] | None,
        tokens: TokenGuard,
        on_refused: Callable[[], None] | None,
    ) -> None:
        self.book = book
        self.source = source
        self.on_success = on_success
        self.replay = replay
        self.run_blocking = run_blocking
        self.token = token
        self.tokens = tokens
        self.on_refused = on_refused

    def secret(self, mode: str) -> tuple[str | None, str | None]:
        """(the secret this attempt must know, None) or (None, why it is refused)."""
        if mode == "token":
            token = self.token() if self.token is not None else ""
            if not token:
                return None, "pairing is closed: this host takes no token"
            return token, self.tokens.refusal(self.source)
        reason = self.book.refusal(self.source)
        code = self.book.live()
        if reason is None and code is None:
            reason = "pairing is closed: no join code is live (ask the host for a new code)"
        return (joincode.normalize(code) if code else None), reason

    def still(self, mode: str, secret: str) -> str | None:
        """Asked again just before the tag is checked: why it may not be, or None."""
        if mode == "token":
            return self.tokens.refusal(self.source)
        reason = self.book.refusal(self.source)
        if reason is None and joincode.normalize(self.book.live() or "") != secret:
            reason = _CODE_EXPIRED
        return reason

    def fail(self, mode: str) -> str:
        """Count one failed key confirmation; the line for the joiner."""
        if mode == "token":
            self.tokens.fail(self.source)
            return _WRONG_TOKEN
        self.book.fail(self.source)
        return _WRONG_CODE


async def _read_hello(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[bytes, dict[str, Any]]:
    """The joiner's hello, as sent and parsed. Raises :class:`_BadPeer` for anything else,
    after answering it."""
    hello_bytes = await _read_frame(reader)
    try:
        hello = _parse_hello(hello_bytes)
    except _BadPeer as e:
        await _send(writer, _error_frame(_OLD_VERSION if isinstance(e, _Version) else "bad hello"))
        raise
    return hello_bytes, hello


async def _read_spake(reader: asyncio.StreamReader, replay: ReplayGuard) -> bytes:
    """The joiner's SPAKE2 message, which must be fresh."""
    msg_a = await _read_frame(reader)
    if len(msg_a) != _SPAKE_MSG_LEN:
        raise _BadPeer(f"SPAKE2 message of {len(msg_a)} bytes")
    if not replay.fresh(msg_a):
        raise _BadPeer("replayed SPAKE2 message")
    return msg_a


async def _read_csr(reader: asyncio.StreamReader, seal_key: bytes) -> bytes | str:
    """The joiner's signing request (PEM), or why it is not one (a line for the joiner)."""
    sealed = await _read_frame(reader)
    if len(sealed) > _MAX_SEALED_CSR:
        return f"{_BAD_CSR}: over {MAX_CSR_BYTES} bytes"
    csr = _unseal(seal_key, _AAD_CSR, sealed)
    if csr is None:
        return f"{_BAD_CSR}: it does not decrypt"
    if not csr.lstrip().startswith(_CSR_PEM):
        return f"{_BAD_CSR}: not a PEM certificate request"
    return csr


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: _Host) -> bool:
    hello_bytes, hello = await _read_hello(reader, writer)
    mode = str(hello["mode"])
    secret, reason = host.secret(mode)
    if secret is None or reason is not None:
        # Before the SPAKE2 message is even read: a refused attempt costs no SPAKE2 work.
        if host.on_refused is not None:
            host.on_refused()
        await _answer_and_finish(reader, writer, reason or "pairing is closed")
        return False
    msg_a = await _read_spake(reader, host.replay)
    password = _password(mode, secret)
    msg_b, key = await host.run_blocking(lambda: _host_spake(password, msg_a))
    transcript = _transcript(hello_bytes, msg_a, msg_b)
    confirm_key, seal_key = _derive(key, transcript)
    await _send(writer, _frame(msg_b))

    tag = await _read_frame(reader)
    if len(tag) != _MAC_LEN:
        raise _BadPeer(f"confirmation of {len(tag)} bytes")
    # Asked again now: parallel attempts, or the owner, may have changed things meanwhile. No
    # await from here to the count, so no other connection can slip in between.
    reason = host.still(mode, secret)
    if reason is not None:
        await _answer_and_finish(reader, writer, reason)
        return False
    if not hmac.compare_digest(tag, _confirm_tag(confirm_key, b"joiner", transcript)):
        # Count first: a joiner that hangs up at once must still use up a guess.
        error = host.fail(mode)
        log.debug("pairing: %s from %s (%r)", error, host.source, hello["node_name"])
        await _answer_and_finish(reader, writer, error)
        return False
    if mode == "code":
        host.book.use()

    csr = await _read_csr(reader, seal_key)
    if isinstance(csr, str):
        log.warning("pairing: %s from %s (%r)", csr, host.source, hello["node_name"])
        await _answer_and_finish(reader, writer, csr)
        return False
    try:
        credentials = host.on_success(hello, csr)
    except CertError as e:
        error = f"{_BAD_CSR}: {e}"
        log.warning("pairing: %s from %s (%r)", error, host.source, hello["node_name"])
        await _answer_and_finish(reader, writer, error)
        return False
    except Exception:
        await _send(writer, _error_frame("host could not issue credentials"))
        raise
    sealed = _seal(seal_key, _AAD, _json_bytes(credentials))
    if len(sealed) > MAX_FRAME:
        raise ValueError("credentials too large for one frame")
    await _send(writer, _frame(_confirm_tag(confirm_key, b"host", transcript)) + _frame(sealed))
    return True


async def serve_pairing(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    book: CodeBook,
    source: str,
    on_success: OnSuccess,
    replay: ReplayGuard,
    run_blocking: RunBlocking[tuple[bytes, bytes]] = _in_thread,
    token: Callable[[], str] | None = None,
    tokens: TokenGuard | None = None,
    on_refused: Callable[[], None] | None = None,
    timeout: float = 10.0,
) -> bool:
    """Run the host side of one pairing connection from ``source``, then close it; True if
    the joiner paired.

    ``book`` says whether pairing with a code is open and counts the outcome; ``token()`` is
    the cluster token for token mode (None: the host takes no token) and ``tokens`` counts
    failed token attempts; ``on_success(hello, csr_pem)`` returns the credentials to send,
    with the joiner's certificate; ``on_refused()`` is told of an attempt refused before any
    SPAKE2 work; ``run_blocking`` runs the SPAKE2 arithmetic off the event loop. Never raises
    on bad input (bad frames, oversize, timeout, disconnect): it logs at debug level and
    closes.
    """
    host = _Host(
        book, source, on_success, replay, run_blocking, token, tokens or TokenGuard(), on_refused
    )
    try:
        return await asyncio.wait_for(_serve(reader, writer, host), timeout)
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


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reason: str) -> None:
    """Tell a joiner why pairing is refused and close, with no SPAKE2 work.

    What the joiner already sent is read (for at most a second) before closing: closing
    with unread data would reset the connection and lose the reason on the way.
    """
    try:
        await _answer_and_finish(reader, writer, reason)
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


def _exchange(
    conn: _Conn,
    mode: str,
    secret: str,
    node_name: str,
    cluster_id: str | None,
    csr: bytes,
) -> dict[str, Any]:
    hello = _json_bytes(
        {"v": PAIRING_VERSION, "mode": mode, "cluster_id": cluster_id, "node_name": node_name}
    )
    spake = SPAKE2_A(_password(mode, secret), idA=_ID_JOINER, idB=_ID_HOST)
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
    conn.send(_seal(seal_key, _AAD_CSR, csr))
    if not hmac.compare_digest(conn.recv(), _confirm_tag(confirm_key, b"host", transcript)):
        raise PairingError("host failed key confirmation; it may not be the real host")
    plain = _unseal(seal_key, _AAD, conn.recv())
    try:
        credentials = json.loads(plain) if plain is not None else None
    except ValueError:
        credentials = None
    if credentials is None:
        raise PairingError("bad reply from host (credentials do not decrypt)")
    if not isinstance(credentials, dict):
        raise PairingError("bad reply from host (credentials are not an object)")
    if cluster_id is not None and credentials.get("cluster_id") != cluster_id:
        raise PairingError("host answered for a different cluster than the one asked for")
    if not isinstance(credentials.get("cert"), str) or not isinstance(credentials.get("ca"), str):
        raise PairingError("bad reply from host (no certificate): is it an older lanray-tui?")
    return credentials


def _run(
    host: str,
    port: int,
    timeout: float,
    exchange: Callable[[_Conn], dict[str, Any]],
) -> dict[str, Any]:
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
            return exchange(_Conn(sock, deadline))
        except TimeoutError:
            raise PairingError("pairing timed out") from None
        except OSError as e:
            raise PairingError(f"connection to {host}:{port} failed: {e.strerror or e}") from None


def _check_request(node_name: str, csr: bytes) -> None:
    if not _is_name(node_name):
        raise PairingError("the node name must be 1-64 printable characters")
    if len(csr) > MAX_CSR_BYTES or not csr.lstrip().startswith(_CSR_PEM):
        raise PairingError("the signing request is not a PEM certificate request")


def pair(
    host: str,
    port: int,
    code: str,
    *,
    node_name: str,
    csr: bytes,
    cluster_id: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Pair with the host at ``host:port`` using join ``code``; return the cluster credentials,
    with ``cert`` (the certificate for ``csr``, this node's signing request) and ``ca``.

    Blocking: the CLI calls it directly, the TUI from a thread worker. ``timeout`` bounds the
    whole exchange. Raises :class:`PairingError` with one line on any failure.
    """
    if not joincode.is_valid(code):
        # Catch typos here: a malformed code would only burn one of the host's few guesses.
        raise PairingError(f"{code.strip()!r} is not a join code (they look like 7-tiger-canvas)")
    _check_request(node_name, csr)
    code = joincode.normalize(code)
    return _run(
        host, port, timeout, lambda conn: _exchange(conn, "code", code, node_name, cluster_id, csr)
    )


def pair_with_token(
    host: str,
    port: int,
    token: str,
    *,
    node_name: str,
    csr: bytes,
    cluster_id: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """:func:`pair` with the cluster token instead of a join code (``join --token-file``): the
    token is the SPAKE2 password, so it never crosses the wire, and a host that does not know
    it learns nothing it could test guesses against."""
    token = token.strip()
    if not token or len(token) > 1024 or not token.isprintable():
        raise PairingError("the cluster token must be 1-1024 printable characters")
    _check_request(node_name, csr)
    return _run(
        host,
        port,
        timeout,
        lambda conn: _exchange(conn, "token", token, node_name, cluster_id, csr),
    )
