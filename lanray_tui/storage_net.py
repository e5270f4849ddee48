"""The storage client's TLS, done in memory: one socket call moves many TLS records.

httpx reads through an ``ssl.SSLSocket``, where each read returns one TLS record (16 KiB)
and costs two system calls (the record's header, then its body), and httpcore parses each
record's worth on its own. With a gigabit link that does not matter; where the link is faster
than the CPU (two nodes on one machine, 10 GbE), it halves the storage's throughput.

:class:`BulkTlsStream` keeps the same TLS (the same context, so the same certificates and
checks) in an ``ssl.SSLObject`` over memory buffers: it reads up to 1 MiB from the socket at
a time, hands httpcore up to what it asked for (64 KiB) in one piece, and sends a body's
chunk encrypted in one call. :func:`transport` is an httpx transport that uses it. It is
httpcore's own ``TLSinTLSStream`` (which does the same for TLS inside TLS) with bigger reads.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx

RAW_READ = 1 << 20  # bytes asked of the socket at once


class BulkTlsStream(httpcore.NetworkStream):
    """TLS over ``sock`` through memory buffers (see the module)."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        server_hostname: str | None,
        timeout: float | None,
    ) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl_obj = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        sock.settimeout(timeout)
        while True:
            try:
                self.ssl_obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_pending()
                self._fill()
        self._send_pending()

    def _send_pending(self) -> None:
        if self._out.pending:
            self._sock.sendall(self._out.read())

    def _fill(self) -> None:
        data = self._sock.recv(RAW_READ)
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    def _read(self, max_bytes: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < max_bytes:
            try:
                data = self.ssl_obj.read(max_bytes - got)
            except ssl.SSLWantReadError:
                if parts:  # what is here now, rather than wait for more
                    break
                self._send_pending()  # a key update may have queued an answer
                self._fill()
                continue
            except ssl.SSLZeroReturnError:  # the server closed TLS cleanly
                break
            if not data:
                break
            parts.append(data)
            got += len(data)
            if not self._in.pending:
                break
        self._send_pending()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(timeout)
            return self._read(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            self._sock.settimeout(timeout)
            view = memoryview(buffer)
            while view:
                sent = self.ssl_obj.write(view[:RAW_READ])
                view = view[sent:]
                self._send_pending()

    def close(self) -> None:
        self._sock.close()

    # start_tls: httpcore's NotImplementedError (no TLS inside the storage's TLS)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self.ssl_obj
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":  # asked of an idle kept connection: has the server closed?
            return bool(self._in.pending) or _readable(self._sock)
        return None


class _PlainStream(httpcore.NetworkStream):
    """A connected socket, before TLS (httpcore asks for TLS right away)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        raise httpcore.ReadError("the cluster storage is only spoken to over TLS")

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise httpcore.WriteError("the cluster storage is only spoken to over TLS")

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                return BulkTlsStream(self._sock, ssl_context, server_hostname, timeout)
            except BaseException:
                self._sock.close()
                raise

    def get_extra_info(self, info: str) -> Any:
        return self._sock if info == "socket" else None


class BulkTlsBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, whose TLS is :class:`BulkTlsStream`."""

    def __init__(self) -> None:
        self._plain = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._plain.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PlainStream(stream.get_extra_info("socket"))

    def sleep(self, seconds: float) -> None:
        self._plain.sleep(seconds)


def transport(context: ssl.SSLContext) -> httpx.HTTPTransport:
    """An httpx transport (HTTP/1.1, ``context``'s TLS) through :class:`BulkTlsStream`."""
    made = httpx.HTTPTransport(verify=context)
    limits = httpx.Limits()  # httpx's defaults, as HTTPTransport's own pool has them
    made._pool = httpcore.ConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=BulkTlsBackend(),
    )
    return made


@contextlib.contextmanager
def _mapped(timeout_error: type[Exception], error: type[Exception]) -> Iterator[None]:
    """Socket timeouts as ``timeout_error``, other OSErrors (ssl's too) as ``error``, as
    httpcore's own streams map them."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(str(exc) or "timed out") from exc
    except OSError as exc:
        raise error(str(exc) or type(exc).__name__) from exc


def _readable(sock: socket.socket) -> bool:
    import select

    if sock.fileno() < 0:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
