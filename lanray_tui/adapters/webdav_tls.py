"""The storage server's TLS in cheroot: each handshake in a worker, with a deadline and a cap
per address, and a response's blocks sent whole.

cheroot does every TLS handshake in its one accepting thread, bounded only by the
connection's timeout (10 s): a stranger on the LAN who opens a TCP connection to the storage
and sends nothing stops it for everyone that long, again and again (members' requests fail).
Here the accepting thread only counts and wraps. The handshake happens at the connection's
first read or write, in a worker, within HANDSHAKE_S in all (bytes trickled in one at a time
do not stretch it), and one address may have PER_PEER handshakes unfinished at once (ALL from
every address together): a stranger holds that many of the server's workers at most, for
HANDSHAKE_S at most, and members keep the rest.

cheroot's writer copies what is left of a block into a new ``bytes`` for each TLS record it
sends (16 KiB of a 1 MiB block at a time: 32 MiB copied per MiB sent), which made a GET cost
the server twice the CPU of the TLS itself: ours hands each block to ``sendall`` once.
"""

from __future__ import annotations

import contextlib
import select
import ssl
import threading
import time
from typing import Any

from cheroot import errors
from cheroot.makefile import StreamReader, StreamWriter
from cheroot.ssl.builtin import BuiltinSSLAdapter

HANDSHAKE_S = 5.0
PER_PEER = 4  # unfinished handshakes one address may have
ALL = 8  # ... all addresses together (the server has 16 workers)


class Gate:
    """Unfinished handshakes, by peer address."""

    def __init__(self, per_peer: int = PER_PEER, total: int = ALL) -> None:
        self.per_peer = per_peer
        self.total = total
        self._lock = threading.Lock()
        self._open: dict[object, str] = {}

    def enter(self, peer: str) -> object | None:
        """A token for one more handshake from ``peer``; None when it is over a cap."""
        with self._lock:
            mine = sum(1 for p in self._open.values() if p == peer)
            if len(self._open) >= self.total or mine >= self.per_peer:
                return None
            token = object()
            self._open[token] = peer
            return token

    def leave(self, token: object) -> None:
        """The handshake ended, either way (a second call changes nothing)."""
        with self._lock:
            self._open.pop(token, None)

    def unfinished(self, peer: str | None = None) -> int:
        with self._lock:
            return sum(1 for p in self._open.values() if peer is None or p == peer)


class GatedSocket(ssl.SSLSocket):
    """A server-side TLS socket whose handshake waits for its first read or write."""

    _gate: Gate | None = None
    _token: object | None = None

    def _handshake(self) -> None:
        gate, token = self._gate, self._token
        if gate is None:
            return
        self._gate = None
        timeout = self.gettimeout()
        deadline = time.monotonic() + HANDSHAKE_S
        try:
            self.settimeout(0.0)
            while True:
                try:
                    self.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    readable, writable = [self], []
                except ssl.SSLWantWriteError:
                    readable, writable = [], [self]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.FatalSSLAlert(f"no TLS handshake within {HANDSHAKE_S:g} s")
                select.select(readable, writable, [], left)
        except errors.FatalSSLAlert:
            raise
        except (OSError, ValueError) as exc:  # refused certificate, reset, closed
            raise errors.FatalSSLAlert(str(exc) or type(exc).__name__) from exc
        finally:
            gate.leave(token)
            with contextlib.suppress(OSError):
                self.settimeout(timeout)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        self._handshake()
        return super().read(len, buffer)

    def send(self, data: Any, flags: int = 0) -> int:
        self._handshake()
        return super().send(data, flags)

    def write(self, data: Any) -> int:
        self._handshake()
        return super().write(data)

    def close(self) -> None:
        gate, token = self._gate, self._token
        if gate is not None:  # closed before its handshake began
            gate.leave(token)
        super().close()


class SendallWriter(StreamWriter):
    """cheroot's writer, but a block goes to ``sendall`` whole (see the module)."""

    def __init__(self, sock: Any, mode: str = "wb", bufsize: int = 8192) -> None:
        super().__init__(sock, mode, bufsize)
        self._sendall = sock.sendall

    def write(self, b: Any) -> int:
        self._checkClosed()
        if isinstance(b, str):
            raise TypeError("can't write str to binary stream")
        self.flush()  # nothing, unless written the buffered way before
        self._sendall(b)
        self.bytes_written += len(b)
        return len(b)


class GatedAdapter(BuiltinSSLAdapter):
    """cheroot's TLS adapter with the gate and the writer above. ``context`` (set after
    it is made, as for cheroot's own) is the server's own: its sockets become GatedSockets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = Gate()

    def wrap(self, sock: Any) -> tuple[Any, dict[str, Any]]:
        try:
            peer = str(sock.getpeername()[0])
        except OSError as exc:
            sock.close()
            raise errors.FatalSSLAlert(str(exc)) from exc
        token = self.gate.enter(peer)
        if token is None:
            sock.close()
            raise errors.FatalSSLAlert(f"{peer} has too many TLS handshakes unfinished")
        self.context.sslsocket_class = GatedSocket
        try:
            wrapped = self.context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ValueError) as exc:
            self.gate.leave(token)
            sock.close()
            raise errors.FatalSSLAlert(str(exc)) from exc
        wrapped._gate, wrapped._token = self.gate, token
        return wrapped, {}  # no TLS variables for the WSGI app (WsgiDAV uses none)

    def makefile(self, sock: Any, mode: str = "r", bufsize: int = -1) -> Any:
        if bufsize < 0:
            bufsize = 8192
        if "r" in mode:
            return StreamReader(sock, mode, bufsize)
        return SendallWriter(sock, mode, bufsize)
