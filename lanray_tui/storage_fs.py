"""The cluster storage as an fsspec filesystem, authenticated with this node's certificate.

:class:`ClusterFS` is webdav4's WebDAV filesystem over HTTPS (httpx), whose TLS context shows
this node's certificate and trusts only the cluster's CA. It keeps nothing but the storage's
address in its arguments: pickled and sent to a Ray worker on another node (Ray Train does
that with ``storage_filesystem``), it is made again there with that node's own certificate.

This node's files come from Ray's TLS variables (``RAY_TLS_SERVER_CERT``, ``..._KEY``,
``RAY_TLS_CA_CERT``: every Ray process and job of the cluster has them), else from the
agent's TLS folder. Imported only where storage is used: webdav4 loads httpx, which loads
click and rich where they are installed (so this lives outside the core, which must not).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webdav4.client import Client, HTTPError
from webdav4.fsspec import UploadFile, WebdavFileSystem

from .core.errors import LanrayError
from .core.storage_layout import StorageError, base_uri, job_path, parse

if TYPE_CHECKING:
    from .core.config import Config

# httpx logs every request at INFO, which Ray's workers print: one line per file of a
# checkpoint. Its warnings still show.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

TIMEOUT_S = 60.0
CHUNK = 1 << 20
SIZES_PATH = ".lanray/sizes"


def tls_files(tls_dir: str = "") -> tuple[Path, Path, Path]:
    """(certificate, key, CA certificate) of this node: those in ``tls_dir`` when given,
    else Ray's TLS variables', else the agent's TLS folder."""
    from .core.cluster_ca import NodeTls

    if tls_dir:
        given = NodeTls(Path(tls_dir))
        return given.cert, given.key, given.ca_cert
    env = [os.environ.get(k, "") for k in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY")]
    ca = os.environ.get("RAY_TLS_CA_CERT", "")
    if all(env) and ca:
        return Path(env[0]), Path(env[1]), Path(ca)
    from .core.paths import Paths

    tls = NodeTls(Paths.from_env().tls_dir)
    return tls.cert, tls.key, tls.ca_cert


def client_context(tls_dir: str = "") -> ssl.SSLContext:
    """This node's client side of the storage's TLS (raises StorageError without one)."""
    cert, key, ca = tls_files(tls_dir)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise StorageError(
            f"this node has no usable certificate of the cluster ({cert}): {exc}"
        ) from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _DavClient(Client):
    """webdav4's client, but one path's properties are asked with ``Depth: 0``: webdav4
    asks ``Depth: 1``, so the server lists a whole folder to answer for the folder (every
    ``info``, ``isdir`` and ``makedirs`` of a folder; a checkpoint's files written into one
    folder cost O(n) each)."""

    def info(self, path: str) -> dict[str, Any]:
        from webdav4.client import _prepare_result_info

        result = self.propfind(path, headers={"Depth": "0"})
        details = _prepare_result_info(
            result.responses[self.join_url(path).path], self.base_url, detail=True
        )
        assert not isinstance(details, str)
        return details


class _Upload(UploadFile):
    """``open(path, "wb")``: spooled, sent on close through :meth:`ClusterFS.upload_fileobj`
    (its folders made only when the storage does not know them)."""

    fs: ClusterFS

    def commit(self) -> None:
        self.seek(0)
        self.fs.upload_fileobj(self, self.path, chunk_size=self.blocksize)


class ClusterFS(WebdavFileSystem):
    """The storage area at ``uri`` (``webdavs://HOST:PORT/``); paths are relative to it.

    ``tls_dir``: this node's TLS folder, for a command that knows it from its config (a
    job's processes leave it out: see :func:`tls_files`).

    A file is written with one PUT once its folder is known to exist: folders this instance
    made or found are remembered, and one that went away since (removed by another node or
    by the cap) is made again when the storage answers 409, and the file sent again."""

    protocol = ("webdavs",)

    def __init__(self, uri: str, tls_dir: str = "", **kwargs: Any) -> None:
        self.uri = parse(uri).base
        self._dirs: set[str] = set()  # folders known to exist: uploads into them skip MKCOL
        kwargs.setdefault("timeout", TIMEOUT_S)
        kwargs.setdefault("chunk_size", self.blocksize)
        from .storage_net import transport

        context = client_context(tls_dir)
        kwargs.setdefault("transport", transport(context))
        client = _DavClient(parse(uri).https, verify=context, **kwargs)
        super().__init__(parse(uri).https, client=client)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if isinstance(path, str) and path.startswith("webdavs://"):
            return parse(path).path
        return str(super()._strip_protocol(path)).strip("/")

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode:  # a job writes 'jobs/<id>/a/b.csv' without making 'a/': made on close
            return _Upload(self, path=path, mode=mode, block_size=kwargs.get("block_size"))
        return super()._open(path, mode, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """MKCOL first, its parents only when the storage says they are missing (webdav4
        asks for each parent's properties first: two more requests a folder)."""
        path = self._strip_protocol(path)
        if not path:
            if not exist_ok:
                raise FileExistsError(path)
            return
        try:
            self._mkdir(path, exist_ok=exist_ok)
        except FileNotFoundError:  # 409: the parent is missing
            self.makedirs(self._parent(path), exist_ok=True)
            self._mkdir(path, exist_ok=exist_ok)
        self._dirs.add(path)

    def upload_fileobj(
        self,
        fobj: Any,
        rpath: str,
        callback: Any = None,
        overwrite: bool = True,
        size: int | None = None,
        **kwargs: Any,
    ) -> None:
        """One PUT when the folder is known (put_file, pipe_file and open(.., "wb") all
        come here); else its folders first."""
        from fsspec.callbacks import Callback
        from webdav4.fs_utils import peek_filelike_length

        rpath = self._strip_protocol(rpath)
        parent = self._parent(rpath)
        start = fobj.tell() if fobj.seekable() else None
        if parent and (start is None or parent not in self._dirs):
            self.makedirs(parent, exist_ok=True)
        size = peek_filelike_length(fobj) if size is None else size
        callback = Callback.as_callback(callback)
        if size is not None:
            callback.set_size(size)

        def put() -> None:
            self.client.upload_fileobj(
                fobj,
                rpath,
                overwrite=overwrite,
                callback=callback.relative_update,
                size=size,
                **kwargs,
            )

        try:
            put()
        except HTTPError as exc:
            if exc.status_code != 409 or start is None or not parent:
                raise
            self._dirs.discard(parent)  # removed since we last saw it: make it again
            self.makedirs(parent, exist_ok=True)
            fobj.seek(start)
            put()

    def rm_file(self, path: str) -> None:
        self._dirs.clear()  # what is known to exist is known no longer
        super().rm_file(path)

    def rmdir(self, path: str) -> None:
        self._dirs.clear()
        super().rmdir(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        self._dirs.clear()
        super().rm(path, recursive=recursive, maxdepth=maxdepth)

    def mv(self, path1: Any, path2: Any, recursive: bool = False, **kwargs: Any) -> None:
        self._dirs.clear()
        super().mv(path1, path2, recursive=recursive, **kwargs)

    def get_file(self, rpath: str, lpath: Any, callback: Any = None, **kwargs: Any) -> None:
        """One GET streamed straight into ``lpath`` (webdav4's own path asks for the
        properties first and reads through a seekable wrapper: about 1.4x slower here)."""
        from fsspec.callbacks import DEFAULT_CALLBACK
        from fsspec.utils import isfilelike

        callback = callback or DEFAULT_CALLBACK
        path = self._strip_protocol(rpath)
        with self.client.http.stream("GET", self.client.join_url(path)) as resp:
            if resp.status_code != 200:
                if self.isdir(path):
                    if not isfilelike(lpath):
                        os.makedirs(lpath, exist_ok=True)
                    return
                if resp.status_code == 404:
                    raise FileNotFoundError(rpath)
                resp.raise_for_status()
                raise OSError(f"{rpath}: HTTP {resp.status_code}")
            callback.set_size(int(resp.headers.get("content-length", 0)) or None)
            out = lpath if isfilelike(lpath) else open(lpath, "wb")  # noqa: SIM115
            try:
                for chunk in resp.iter_raw(CHUNK):
                    out.write(chunk)
                    callback.relative_update(len(chunk))
            finally:
                if out is not lpath:
                    out.close()

    def sizes(self) -> dict[str, Any]:
        """The host's sizes of the job folders (``{"jobs": {id: bytes}}``)."""
        resp = self.client.http.get(SIZES_PATH)
        resp.raise_for_status()
        return dict(resp.json())


# ----- a node's commands: results home --------------------------------------------------------


def for_node(cfg: Config) -> ClusterFS:
    """The cluster storage of the cluster this node is in (its credentials and config)."""
    from .core import credentials

    paths = cfg.paths()
    creds = credentials.load(paths.credentials)
    if creds is None or not creds.head_address:
        raise LanrayError(
            "this machine is in no cluster: 'lanray-tui host' or 'lanray-tui join' first"
        )
    uri = base_uri(creds.head_address, int(cfg["storage.port"]))
    return ClusterFS(uri, tls_dir=str(paths.tls_dir))


def errors() -> tuple[type[BaseException], ...]:
    """What a storage request raises when the storage cannot be reached or used."""
    import httpx
    from webdav4.client import ClientError, HTTPError

    return (OSError, ssl.SSLError, httpx.HTTPError, ClientError, HTTPError)


def why(exc: BaseException, uri: str) -> StorageError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(f"the cluster storage at {uri} did not answer: {text}")


Progress = Callable[[str, int], Any]  # (path in the folder, bytes) -> an fsspec Callback or None


def fetch(
    fs: ClusterFS, job_id: str, dest: Path, progress: Progress | None = None
) -> tuple[int, int]:
    """Copy the job's folder into ``dest``; (files, bytes). Each file lands whole (written
    as NAME.part, then renamed)."""
    folder = job_path(job_id)
    found: dict[str, dict[str, Any]] = fs.find(folder, detail=True)
    if not found and not fs.exists(folder):
        raise StorageError(f"job {job_id} has no results in the cluster storage")
    dest.mkdir(parents=True, exist_ok=True)
    count = total = 0
    for rpath, info in sorted(found.items()):
        rel = rpath.strip("/")[len(folder) :].strip("/")
        if not rel or info.get("type") == "directory":
            continue
        local = dest.joinpath(*rel.split("/"))
        if dest.resolve() not in local.resolve().parents:
            raise StorageError(f"refusing a path outside {dest}: {rel}")
        local.parent.mkdir(parents=True, exist_ok=True)
        size = int(info.get("size") or 0)
        tmp = local.with_name(local.name + ".part")
        callback = progress(rel, size) if progress is not None else None
        if callback is not None:
            fs.get_file(rpath, str(tmp), callback=callback)
        else:
            fs.get_file(rpath, str(tmp))
        tmp.replace(local)
        count += 1
        total += local.stat().st_size
    return count, total


def save_results(cfg: Config, job_id: str, dest: Path) -> tuple[int, int]:
    """``fetch`` from this node's cluster storage, every failure as one line."""
    job_path(job_id)
    fs = for_node(cfg)
    try:
        return fetch(fs, job_id, dest)
    except LanrayError:
        raise
    except errors() as exc:
        raise why(exc, fs.uri) from None
