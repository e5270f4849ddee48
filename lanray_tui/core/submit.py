"""What a job submission sends: the spec, with its working dir uploaded from this node.

The CLI's ``submit`` and the TUI's new-job form both build a job here and hand it to this
node's agent (which, on a joined node, forwards it to the host's queue). The upload goes
through Ray's own packaging into the cluster's GCS over Ray's mutual-TLS gRPC, in a child
process (the only one that loads Ray), and only when there is a directory.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import samples
from .errors import LanrayError
from .paths import Paths

MAX_SIGNED_FILES = 20_000
MAX_CACHED_DIRS = 50


@dataclass
class Submission:
    """A job as a person asks for it: a ``script`` (run with the cluster's Python in an
    upload of ``working_dir``, by default the script's directory) or a ``command``."""

    script: Path | None = None
    command: Sequence[str] = ()
    args: Sequence[str] = ()
    working_dir: Path | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    name: str | None = None
    priority: int | None = None
    max_time_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)


def submitter() -> str:
    """Who queues the job: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def build_spec(paths: Paths, sub: Submission) -> dict[str, Any]:
    """The spec the agent's ``submit`` takes; raises :class:`LanrayError` with one line
    before anything is sent when the script or its directory is wrong."""
    if (sub.script is None) == (not sub.command):
        raise LanrayError("a job is a script or a command (exactly one)")
    spec: dict[str, Any] = {"args": list(sub.args)}
    working_dir = sub.working_dir
    if sub.script is not None:
        path = sub.script.expanduser()
        if not path.is_file():
            # `submit sample_jobs/NAME.py` from anywhere: the sample that ships with lanray-tui
            path = samples.packaged(path) or path
        if not path.is_file():
            raise LanrayError(f"no such script: '{sub.script}'")
        path = path.resolve()
        base = (working_dir or path.parent).expanduser().resolve()
        try:
            rel = path.relative_to(base)
        except ValueError:
            raise LanrayError(
                f"the script '{sub.script}' is not inside --working-dir '{base}'"
            ) from None
        spec["script"] = rel.as_posix()
        working_dir = base
    else:
        spec["command"] = list(sub.command)
    if working_dir is not None:
        spec["working_dir"] = upload(paths, working_dir.expanduser())
    for key, value in (
        ("num_cpus", sub.num_cpus),
        ("num_gpus", sub.num_gpus),
        ("name", sub.name or None),
        ("priority", sub.priority),
        ("max_time_s", sub.max_time_s),
    ):
        if value is not None:
            spec[key] = value
    if sub.env:
        spec["env"] = dict(sub.env)
    return spec


def upload(paths: Paths, directory: Path) -> str:
    """Upload ``directory`` to the cluster from this node; returns the package URI.

    Ray names a package by a hash of its content. When nothing in the directory changed
    since the last upload from this node (same files, sizes and times) and the cluster still
    holds that package, its URI is reused without loading Ray to hash the directory again.
    """
    from ..adapters import ray_jobs
    from . import credentials, ray_tls

    creds = credentials.load(paths.credentials)
    if creds is None or not creds.head_address:
        raise LanrayError("this node has no cluster credentials: host or join a cluster first")
    directory = directory.resolve()
    if not directory.is_dir():
        raise LanrayError(f"working dir '{directory}' is not a directory")
    tls = ray_tls.ray_env(paths.tls_dir)
    gcs = creds.gcs_address
    cache = paths.state_dir / "uploads.json"
    sig = signature(directory)
    known = _read_cache(cache).get(str(directory), {})
    if sig and known.get("signature") == sig:
        uri = str(known.get("uri", ""))
        if uri and _cluster_holds(paths, uri):
            return uri
    uri = ray_jobs.upload_working_dir(gcs, creds.token, tls, directory)
    if sig:
        _write_cache(cache, str(directory), {"signature": sig, "uri": uri})
    return uri


def _cluster_holds(paths: Paths, uri: str) -> bool:
    """Whether the cluster still holds package ``uri``, asked of this node's agent (the host
    answers from its copy or Ray's Jobs API, in milliseconds: no Ray to load here). False
    when it cannot tell: the upload that follows says what is wrong."""
    from .control import ControlClient
    from .protocol import PackageRequest

    try:
        return ControlClient(paths.socket).request(PackageRequest(uri=uri), timeout=10.0).held
    except LanrayError:
        return False


def signature(directory: Path) -> str:
    """A hash of every path, size and modification time under ``directory`` (empty when it
    holds too much to be worth it). Any change, even to a file Ray would skip, changes it."""
    h = hashlib.sha256()
    count = 0
    ignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "")
    h.update(f"gitignore={ignore}\n".encode())
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        rel = os.path.relpath(root, directory)
        h.update(f"d {rel}\n".encode())
        for name in sorted(files):
            count += 1
            if count > MAX_SIGNED_FILES:
                return ""
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                return ""
            h.update(f"f {rel}/{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    doc = _read_cache(path)
    doc.pop(key, None)
    doc[key] = entry
    doc = dict(list(doc.items())[-MAX_CACHED_DIRS:])
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
    except OSError:
        pass  # only a cache


def sample_jobs_dir() -> Path | None:
    """The folder of the sample jobs that ship with lanray-tui (None when this install has
    none); see :mod:`lanray_tui.core.samples`."""
    return samples.sample_jobs_dir()


def sample_jobs() -> list[tuple[str, str]]:
    """(path, first line of its docstring) of each sample job, by name."""
    return [(str(s.path), s.summary) for s in samples.samples()]
