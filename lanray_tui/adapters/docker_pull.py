"""Pulling an image, with progress about once a second and one line when it fails.

Part of :mod:`.docker_engine`, which re-exports its public names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .docker_errors import DockerError, _fail, _one_line

PROGRESS_EVERY_S = 1.0

Say = Callable[[str], None]

_NO_NETWORK = (
    "dial tcp",
    "no such host",
    "connection refused",
    "i/o timeout",
    "network is unreachable",
    "timeout",
    "temporary failure",
    "tls handshake",
    "connection reset",
    "no route to host",
)
_NO_IMAGE = ("manifest unknown", "not found", "does not exist", "pull access denied")


def pull_image(client: Any, image: str, say: Say) -> None:
    """Pull ``image`` with ``client``, reporting layers and bytes through ``say`` every second."""
    import docker
    from docker.utils import parse_repository_tag

    repo, tag = parse_repository_tag(image)
    layers: dict[str, tuple[str, int, int]] = {}  # id -> (status, current, total)
    last, line = 0.0, ""
    say(f"pulling {image}")
    try:
        for event in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:
                raise pull_error(image, str(event["error"]))
            lid, status = event.get("id", ""), str(event.get("status", ""))
            if not lid or status.startswith(("Pulling from", "Digest", "Status")):
                continue
            detail = event.get("progressDetail") or {}
            _, cur, tot = layers.get(lid, ("", 0, 0))
            if status in ("Downloading", "Extracting") and detail.get("total"):
                cur, tot = int(detail.get("current", 0)), int(detail["total"])
                cur = cur if status == "Downloading" else tot
            if status in ("Download complete", "Pull complete", "Already exists"):
                cur = tot
            layers[lid] = (status, cur, tot)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or status == "Pull complete":
                last, line = now, pull_progress(image, layers)
                say(line)
    except docker.errors.APIError as exc:
        raise pull_error(image, str(exc.explanation or exc)) from None
    except docker.errors.DockerException as exc:
        raise pull_error(image, str(exc)) from None
    except OSError as exc:  # requests' connection errors are OSErrors
        raise pull_error(image, str(exc)) from None
    if layers and pull_progress(image, layers) != line:
        say(pull_progress(image, layers))
    say(f"pulled {image}")


def pull_error(image: str, reason: str) -> DockerError:
    """One line for a failed pull: no registry reachable, no such image or tag, or other."""
    why = _one_line(reason)
    low = why.lower()
    fix = f"load or build {image} with docker"
    if any(s in low for s in _NO_NETWORK):
        return _fail(f"cannot pull {image}: no registry reachable ({why})", fix)
    if any(s in low for s in _NO_IMAGE):
        return _fail(f"cannot pull {image}: no such image or tag in the registry ({why})", fix)
    return _fail(f"cannot pull {image}: {why}", fix)


def pull_progress(image: str, layers: Mapping[str, tuple[str, int, int]]) -> str:
    """``pulling IMAGE: 3 of 7 layers done, 120.5 of 480.2 MB``."""
    done = sum(1 for s, _, _ in layers.values() if s in ("Pull complete", "Already exists"))
    cur = sum(c for _, c, _ in layers.values())
    tot = sum(t for _, _, t in layers.values())
    size = f", {cur / 1e6:.1f} of {tot / 1e6:.1f} MB" if tot else ""
    return f"pulling {image}: {done} of {len(layers)} layers done{size}"
