"""The storage area's server: WsgiDAV (WebDAV) in cheroot's threaded HTTP server, over TLS.

Who may come in is decided by TLS alone: the context the caller gives requires a client
certificate of the cluster's CA, so a connection without one ends in the handshake, before any
HTTP. WebDAV itself then lets every client that got that far read and write. The handshakes
run in the workers, each with a deadline and a cap per address (:mod:`.webdav_tls`), so a
stranger who connects and says nothing holds up nobody.

Besides WebDAV, ``GET /.lanray/sizes`` answers JSON from the ``sizes`` callback (the host
knows the job folders' sizes from its disk; a client would have to walk every folder).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SIZES_PATH = "/.lanray/sizes"
BLOCK_SIZE = 1 << 20  # bytes per read and write of a file body (WsgiDAV's default is 8 KiB)
THREADS = 16

log = logging.getLogger("lanray.storage")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _dav_app(root: Path) -> WsgiApp:
    from wsgidav.wsgidav_app import WsgiDAVApp

    config = {
        "provider_mapping": {"/": {"root": str(root), "readonly": False}},
        # Anonymous at the HTTP level: the TLS handshake already required the cluster's
        # client certificate.
        "simple_dc": {"user_mapping": {"*": True}},
        "http_authenticator": {"accept_basic": False, "accept_digest": False},
        "dir_browser": {"enable": False},
        "fs_dav_provider": {"follow_symlinks": False},
        "lock_storage": True,
        "property_manager": True,
        "block_size": BLOCK_SIZE,
        "verbose": 1,
        "logging": {"enable": False, "enable_loggers": []},
    }
    return WsgiDAVApp(config)


def _with_sizes(app: WsgiApp, sizes: Callable[[], dict[str, Any]]) -> WsgiApp:
    def wrapped(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == SIZES_PATH:
            if environ.get("REQUEST_METHOD") != "GET":
                start_response("405 Method Not Allowed", [("Allow", "GET")])
                return [b""]
            body = json.dumps(sizes()).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return app(environ, start_response)

    return wrapped


class DavServer:
    """WebDAV over ``root`` on ``host:port``, in threads of its own.

    ``cert``/``key`` are the server's own files (cheroot's adapter loads them); ``context``
    then replaces its context with the caller's, which decides whom the server accepts.
    """

    def __init__(
        self,
        root: Path,
        host: str,
        port: int,
        *,
        cert: Path,
        key: Path,
        context: ssl.SSLContext,
        sizes: Callable[[], dict[str, Any]],
        threads: int = THREADS,
    ) -> None:
        from cheroot import wsgi

        from .webdav_tls import GatedAdapter

        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root = root
        self._server = wsgi.Server(
            (host, port),
            _with_sizes(_dav_app(root), sizes),
            numthreads=threads,
            server_name="lanray-storage",
        )
        adapter = GatedAdapter(str(cert), str(key))
        adapter.context = context
        self._server.ssl_adapter = adapter
        self._server.error_log = self._error_log  # type: ignore[method-assign]
        self._server.requests._spawn_worker = self._spawn_daemon
        self._thread: threading.Thread | None = None

    def _spawn_daemon(self) -> Any:
        """cheroot's worker threads, as daemons: a process that never stopped the server
        (an agent ending on an error) still exits. cheroot 11's ``_spawn_worker`` but for
        ``daemon``."""
        from cheroot.workers.threadpool import WorkerThread

        worker = WorkerThread(self._server)
        worker.name = f"lanray-storage {worker.name}"
        worker.daemon = True
        worker.start()
        return worker

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    def start(self) -> None:
        """Bind (raises OSError when it cannot) and serve in a daemon thread."""
        self._server.prepare()
        self._thread = threading.Thread(
            target=self._server.serve, name="lanray-storage", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.stop()
            self._thread = None

    @staticmethod
    def _error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        # refused handshakes (no certificate of the cluster) land here: not the agent's errors
        log.debug("storage server: %s", msg.strip(), exc_info=traceback)
