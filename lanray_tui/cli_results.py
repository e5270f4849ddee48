"""``lanray-tui results JOB [--to DIR] [--rm]``: a job's output folder, brought home.

Jobs write under ``$LANRAY_OUTPUT_DIR``, their folder in the cluster storage the host serves.
This copies that folder to this machine from any node of the cluster, through the storage's
TLS channel with this node's certificate, and ``--rm`` removes it from the storage. Large
files show their progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_base import load_config
from .core.errors import LanrayError
from .core.storage_layout import StorageError, job_path, job_uri

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


def _fs(args: argparse.Namespace) -> ClusterFS:
    from .storage_fs import for_node

    return for_node(load_config(args))


def job_outputs(args: argparse.Namespace) -> Callable[[str], dict[str, Any]]:
    """For ``jobs --json``: each job's output URI and size in bytes (None when unknown:
    no folder, or the storage did not answer)."""
    from .storage_fs import errors

    try:
        fs = _fs(args)
    except LanrayError:
        return lambda job_id: {"output": "", "output_bytes": None}
    uri = fs.uri
    sizes: dict[str, int] = {}
    # no sizes when the storage does not answer: the list still prints
    with contextlib.suppress(*errors(), ValueError):
        sizes = dict(fs.sizes().get("jobs", {}))

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


def _large_files(name: str, size: int) -> Any:
    return _callback(name, size) if size >= PROGRESS_FROM else None


def fetch(fs: ClusterFS, job_id: str, dest: Path) -> tuple[int, int]:
    """Copy the job's folder into ``dest`` (large files with their progress)."""
    from . import storage_fs

    return storage_fs.fetch(fs, job_id, dest, _large_files)


def results(args: argparse.Namespace) -> int:
    job_id = args.job
    job_path(job_id)  # a bad id is one line before any network
    from .storage_fs import errors, why

    fs = _fs(args)
    try:
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
    except errors() as exc:
        raise why(exc, fs.uri) from None
    return 0


HANDLERS = {"results": results}
