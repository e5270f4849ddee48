"""``lanray-tui results JOB [--to DIR] [--rm]``: a job's output folder, brought home.

Jobs write under ``$LANRAY_OUTPUT_DIR``, their folder in the cluster storage the host serves.
This copies that folder to this machine from any node of the cluster, through the storage's
TLS channel with this node's certificate, and ``--rm`` removes it from the storage. Large
files show their progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_base import PROG, load_config
from .core.errors import LanrayError
from .core.storage_layout import StorageError, base_uri, job_path, job_uri

if TYPE_CHECKING:
    from .storage_fs import ClusterFS

PROGRESS_FROM = 8 << 20  # files this large show their progress
MB = 1e6


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "results",
        help="copy a job's output folder to this machine",
        description="Copy JOB's output folder (what it wrote under $LANRAY_OUTPUT_DIR) from "
        "the cluster storage into DIR/JOB, from any node of the cluster.",
    )
    p.add_argument("job", metavar="JOB", help="job id (see 'lanray-tui jobs')")
    p.add_argument("--to", type=Path, metavar="DIR", help="where JOB's folder goes (default: here)")
    p.add_argument(
        "--rm",
        action="store_true",
        help="remove them from the cluster storage (with --to: once copied)",
    )


def storage_uri(args: argparse.Namespace) -> tuple[str, str]:
    """The cluster storage's address, from this node's credentials and config, and this
    node's TLS folder."""
    from .core import credentials

    cfg = load_config(args)
    paths = cfg.paths()
    creds = credentials.load(paths.credentials)
    if creds is None or not creds.head_address:
        raise LanrayError(f"this machine is in no cluster: '{PROG} host' or '{PROG} join' first")
    return base_uri(creds.head_address, int(cfg["storage.port"])), str(paths.tls_dir)


def _fs(uri: str, tls_dir: str) -> ClusterFS:
    from .storage_fs import ClusterFS

    return ClusterFS(uri, tls_dir=tls_dir)


def _storage_errors() -> tuple[type[BaseException], ...]:
    import ssl

    import httpx
    from webdav4.client import ClientError, HTTPError

    return (OSError, ssl.SSLError, httpx.HTTPError, ClientError, HTTPError)


def _why(exc: BaseException, uri: str) -> StorageError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(f"the cluster storage at {uri} did not answer: {text}")


def job_outputs(args: argparse.Namespace) -> Callable[[str], dict[str, Any]]:
    """For ``jobs --json``: each job's output URI and size in bytes (None when unknown:
    no folder, or the storage did not answer)."""
    try:
        uri, tls_dir = storage_uri(args)
    except LanrayError:
        return lambda job_id: {"output": "", "output_bytes": None}
    sizes: dict[str, int] = {}
    try:
        sizes = dict(_fs(uri, tls_dir).sizes().get("jobs", {}))
    except LanrayError:
        pass
    except Exception as exc:  # no sizes: the storage did not answer (the list still prints)
        if not isinstance(exc, (*_storage_errors(), ValueError)):
            raise

    def one(job_id: str) -> dict[str, Any]:
        try:
            out = job_uri(uri, job_id)
        except StorageError:
            return {"output": "", "output_bytes": None}
        return {"output": out, "output_bytes": sizes.get(job_id)}

    return one


class Progress:
    """One file's progress on stderr: redrawn in place at a terminal, else every 25%."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size, self.done = name, size, 0
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last_quarter = 0

    def update(self, n: int) -> None:
        self.done += n
        rate = self.done / MB / max(time.monotonic() - self.started, 1e-6)
        line = f"  {self.name}: {self.done / MB:.1f}/{self.size / MB:.1f} MB ({rate:.0f} MB/s)"
        if self.tty:
            end = "\n" if self.done >= self.size else ""
            print(f"\r{line}", end=end, file=sys.stderr, flush=True)
            return
        quarter = int(4 * self.done / max(self.size, 1))
        if quarter > self.last_quarter:
            self.last_quarter = quarter
            print(line, file=sys.stderr, flush=True)


def _callback(name: str, size: int) -> Any:
    from fsspec.callbacks import Callback

    progress = Progress(name, size)

    class ToStderr(Callback):
        def relative_update(self, inc: int = 1) -> None:
            progress.update(inc)

    return ToStderr(size=size)


def fetch(fs: ClusterFS, job_id: str, dest: Path) -> tuple[int, int]:
    """Copy the job's folder into ``dest``; (files, bytes)."""
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
        if size >= PROGRESS_FROM:
            fs.get_file(rpath, str(tmp), callback=_callback(rel, size))
        else:
            fs.get_file(rpath, str(tmp))
        tmp.replace(local)
        count += 1
        total += local.stat().st_size
    return count, total


def results(args: argparse.Namespace) -> int:
    job_id = args.job
    job_path(job_id)  # a bad id is one line before any network
    uri, tls_dir = storage_uri(args)
    try:
        fs = _fs(uri, tls_dir)
        if args.to is not None or not args.rm:
            dest = (args.to or Path.cwd()) / job_id
            files, size = fetch(fs, job_id, dest)
            print(f"{job_id}: {files} file(s), {size / MB:.1f} MB -> {dest}")
        if args.rm:
            if not fs.exists(job_path(job_id)):
                raise StorageError(f"job {job_id} has no results in the cluster storage")
            fs.rm(job_path(job_id), recursive=True)
            print(f"{job_id}: removed its results from the cluster storage")
    except LanrayError:
        raise
    except _storage_errors() as exc:
        raise _why(exc, uri) from None
    return 0


HANDLERS = {"results": results}
