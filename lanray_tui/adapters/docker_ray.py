"""Ray in a container, seen as a :class:`~.ray_process.RayHandle`.

Part of :mod:`.docker_engine`, which re-exports :class:`DockerRay`.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .docker_errors import _one_line


class DockerRay:
    """Ray running in a container, supervised like a child process.

    One thread waits for the container to exit; another appends its output (stdout and
    stderr, as Docker keeps it) to ``log_path``. ``poll`` returns the exit code only once
    that output is in the file, so a failure message read from the log is complete.
    """

    def __init__(
        self, container: Any, log_path: Path, node_ip: str = "", adopted: bool = False
    ) -> None:
        self.container = container
        self.id: str = container.id
        self.name: str = container.name
        self.node_ip = node_ip
        self.adopted = adopted
        self.log_path = log_path
        self._pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
        self._returncode: int | None = None
        self._exited = threading.Event()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._follower = threading.Thread(
            target=self._follow, name=f"docker-log-{self.name}", daemon=True
        )
        self._waiter = threading.Thread(
            target=self._wait, name=f"docker-wait-{self.name}", daemon=True
        )
        self._follower.start()
        self._waiter.start()

    @property
    def pid(self) -> int:
        """The container's first process (``docker-init``) as the host sees it."""
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def poll(self) -> int | None:
        return self._returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"container {self.name}", timeout or 0.0)
        assert self._returncode is not None
        return self._returncode

    def stop(self, grace_s: float = 15.0) -> int | None:
        """Stop Ray (SIGTERM, SIGKILL after ``grace_s``) and remove the container."""
        import docker

        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.container.stop(timeout=int(grace_s))
        self._exited.wait(10.0)
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.container.remove(force=True)
        return self._returncode

    def _append(self, line: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "ab") as f:
            f.write(f"lanray: {line}\n".encode())

    def _follow(self) -> None:
        """Append the container's output, from its start, until it exits."""
        if self.adopted:
            self._append(f"adopted the running container {self.name}; its output so far:")
        try:
            stream = self.container.logs(stream=True, follow=True, stdout=True, stderr=True)
            with open(self.log_path, "ab", buffering=0) as out:
                for chunk in stream:
                    out.write(chunk)
        except Exception as exc:  # the daemon went away: say so, the waiter decides the rest
            self._append(f"stopped following {self.name}'s output: {_one_line(str(exc))}")

    def _wait(self) -> None:
        import docker

        failures = 0
        rc = 255
        while True:
            try:
                rc = int(self.container.wait().get("StatusCode", 255))
                break
            except docker.errors.NotFound:
                rc = 137  # removed under us (docker rm -f)
                break
            except Exception as exc:  # the daemon restarts or is gone
                failures += 1
                if failures >= 5:
                    self._append(f"lost the Docker daemon: {_one_line(str(exc))}")
                    break
                time.sleep(1.0)
        self._follower.join(3.0)  # its output first, then the exit code
        self._returncode = rc
        self._exited.set()
