"""The cluster's storage, for job code on any node.

The host serves one storage area to the cluster; every job finds it with no configuration:
``$LANRAY_STORAGE`` is its address and ``$LANRAY_OUTPUT_DIR`` the job's own folder in it
(what ``lanray-tui results JOB`` brings home). Access goes through this node's certificate
of the cluster, so it works from the driver and from Ray workers on other nodes alike::

    from lanray_tui import storage

    fs = storage.filesystem()                      # fsspec
    with fs.open(storage.output_path("model.pt"), "wb") as f:
        f.write(data)

    trainer = TorchTrainer(..., run_config=storage.run_config("digits"))     # Ray Train
    tuner = Tuner(..., run_config=storage.run_config("sweep", tune=True))    # Ray Tune

Heavy modules (webdav4, pyarrow, Ray) are imported only by the functions that need them.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from .core.storage_layout import ENV_OUTPUT, ENV_STORAGE, StorageError, parse

if TYPE_CHECKING:
    from .storage_fs import ClusterFS

__all__ = ["available", "filesystem", "output_path", "run_config"]


def available() -> bool:
    """Whether this process runs as a job of the cluster (it has the storage's address)."""
    return bool(os.environ.get(ENV_STORAGE))


def _storage_uri() -> str:
    uri = os.environ.get(ENV_STORAGE, "")
    if not uri:
        raise StorageError(
            f"no cluster storage here: ${ENV_STORAGE} is set only in jobs of a lanray-tui cluster"
        )
    return uri


def filesystem() -> ClusterFS:
    """The cluster storage as an fsspec filesystem (paths relative to its root)."""
    from .storage_fs import ClusterFS

    return ClusterFS(_storage_uri())


def output_path(name: str = "") -> str:
    """This job's folder in the storage (a path of :func:`filesystem`), or ``name`` in it."""
    uri = os.environ.get(ENV_OUTPUT, "")
    if not uri:
        raise StorageError(f"no output folder here: ${ENV_OUTPUT} is set only in cluster jobs")
    folder = parse(uri).path
    return f"{folder}/{name.lstrip('/')}" if name else folder


def run_config(name: str, *, tune: bool = False, **kwargs: Any) -> Any:
    """A ``RunConfig`` that keeps checkpoints and results in this job's folder of the
    cluster storage, where every node reaches them: Ray Train's (``ray.train.RunConfig``),
    or with ``tune=True`` Ray Tune's (``ray.tune.RunConfig``: since Ray Train's second
    version the two are different classes, and each library takes only its own).

    Outside a cluster job it keeps them on this machine (Ray's default), with a note on
    stderr. ``kwargs`` go to ``RunConfig`` as they are."""
    import importlib

    RunConfig = importlib.import_module("ray.tune" if tune else "ray.train").RunConfig

    if not available():
        print(f"lanray: no cluster storage; {name} keeps its results locally", file=sys.stderr)
        return RunConfig(name=name, **kwargs)
    import pyarrow.fs

    handler = pyarrow.fs.FSSpecHandler(filesystem())
    return RunConfig(
        name=name,
        storage_path=output_path(),
        storage_filesystem=pyarrow.fs.PyFileSystem(handler),
        **kwargs,
    )
