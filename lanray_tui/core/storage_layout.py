"""Where things are in the cluster's storage area: its address, the job folders, the cap.

The host serves ``data_dir/storage`` over WebDAV with TLS (:mod:`.storage_server`); a job's
output lives in ``jobs/<job id>/`` there. Jobs read the area's address from
``$LANRAY_STORAGE`` (``webdavs://HOST:PORT/``) and their folder from ``$LANRAY_OUTPUT_DIR``
(``webdavs://HOST:PORT/jobs/<job id>/``). Pure functions only: no network, no library.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LanrayError

SCHEME = "webdavs"
JOBS = "jobs"
ENV_STORAGE = "LANRAY_STORAGE"
ENV_OUTPUT = "LANRAY_OUTPUT_DIR"
GB = 1024**3

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_URI = re.compile(rf"{SCHEME}://(?P<host>[0-9A-Za-z.\-]+):(?P<port>\d{{1,5}})(?P<path>/.*)?")


class StorageError(LanrayError):
    """The storage area cannot be reached or used, in one line."""


def base_uri(host: str, port: int) -> str:
    return f"{SCHEME}://{host}:{port}/"


def check_job_id(job_id: str) -> str:
    """``job_id`` if it can name a folder (no '/', no '..'); else one line."""
    if not _JOB_ID.fullmatch(job_id) or ".." in job_id:
        raise StorageError(f"'{job_id}' is not a job id")
    return job_id


def job_path(job_id: str) -> str:
    """A job's folder, relative to the storage area's root."""
    return f"{JOBS}/{check_job_id(job_id)}"


def job_uri(base: str, job_id: str) -> str:
    return f"{base.rstrip('/')}/{job_path(job_id)}/"


@dataclass(frozen=True)
class Location:
    """A place in the storage area: the server's HTTPS URL and a path under its root."""

    host: str
    port: int
    path: str  # no leading or trailing '/'; "" is the root

    @property
    def base(self) -> str:
        return base_uri(self.host, self.port)

    @property
    def https(self) -> str:
        return f"https://{self.host}:{self.port}/"


def parse(uri: str) -> Location:
    """``webdavs://HOST:PORT/PATH`` -> its parts; anything else raises :class:`StorageError`."""
    m = _URI.fullmatch(uri.strip())
    if m is None or not 0 < int(m["port"]) < 65536:
        raise StorageError(f"'{uri}' is not a storage address ({SCHEME}://HOST:PORT/PATH)")
    parts = [p for p in (m["path"] or "").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise StorageError(f"'{uri}' leaves the storage area")
    return Location(m["host"], int(m["port"]), "/".join(parts))


# ----- the host's side: sizes and the cap ----------------------------------------------------


@dataclass(frozen=True)
class Folder:
    name: str
    mtime: float  # the newest file's (or the folder's own) modification time
    size: int  # bytes of the regular files under it


def folder_stats(path: Path) -> Folder:
    """Size and newest modification time of the files under ``path`` (links not followed)."""
    size, newest = 0, path.lstat().st_mtime
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue  # removed meanwhile
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return Folder(path.name, newest, size)


def job_folders(root: Path) -> list[Folder]:
    """The job folders under ``root/jobs``, oldest first."""
    jobs = root / JOBS
    if not jobs.is_dir():
        return []
    found = []
    for child in jobs.iterdir():
        if child.is_dir() and not child.is_symlink():
            try:
                found.append(folder_stats(child))
            except OSError:
                continue
    return sorted(found, key=lambda f: (f.mtime, f.name))


def over_cap(
    folders: list[Folder], cap_bytes: int, keep: frozenset[str] = frozenset()
) -> list[str]:
    """The folders to remove, oldest first, until the rest fit in ``cap_bytes``.

    Folders in ``keep`` (the jobs running now) are never chosen."""
    total = sum(f.size for f in folders)
    out: list[str] = []
    for f in sorted(folders, key=lambda f: (f.mtime, f.name)):
        if total <= cap_bytes:
            break
        if f.name in keep:
            continue
        out.append(f.name)
        total -= f.size
    return out
