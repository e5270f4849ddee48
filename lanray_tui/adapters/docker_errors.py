"""Why Docker cannot run Ray here, in one line that ends with the way out.

Part of :mod:`.docker_engine`, which re-exports its public names.
"""

from __future__ import annotations

import os
import shutil
import socket

from ..core.types import LanrayError

HINT = "use runtime.kind: native"
DEFAULT_HOST = "unix:///var/run/docker.sock"


class DockerError(LanrayError):
    """Docker cannot run Ray here; the one-line message says why and what to do."""


def _fail(what: str, fix: str = "") -> DockerError:
    return DockerError(f"{what}; {fix + ', or ' if fix else ''}{HINT}")


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def docker_host() -> str:
    """Where the daemon is: ``$DOCKER_HOST`` or the standard socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def socket_problem(host: str) -> DockerError | None:
    """Why a ``unix://`` daemon socket cannot be used, or None when it answers a connect."""
    if not host.startswith("unix://"):
        return None  # tcp:// and ssh:// are left to the SDK
    path = host[len("unix://") :]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3.0)
    try:
        s.connect(path)
    except FileNotFoundError:
        if not (shutil.which("dockerd") or shutil.which("docker")):
            return _fail(
                f"Docker is not installed (no docker command, no daemon socket at {path})",
                "install it (apt-get install docker.io)",
            )
        return _fail(
            f"the Docker daemon is not running (no socket at {path})",
            "start it (sudo systemctl start docker)",
        )
    except ConnectionRefusedError:
        return _fail(
            f"the Docker daemon is not running ({path} refuses connections)",
            "start it (sudo systemctl start docker)",
        )
    except PermissionError:
        return _fail(
            f"permission denied on the Docker socket {path}",
            "add this user to the 'docker' group (sudo usermod -aG docker $USER; log in again)",
        )
    except OSError as exc:
        return _fail(f"cannot reach the Docker daemon at {path}: {exc.strerror or exc}")
    finally:
        s.close()
    return None
