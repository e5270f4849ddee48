"""Plain types that the core and the adapters share: the leaf of lanray-tui's imports.

This module imports nothing from lanray-tui, so every adapter may use it without depending
on the rest of the core (an import-linter contract in ``pyproject.toml`` holds that). It
holds the error every user-facing failure derives from, the readings the NVML adapter
returns, and a Ray node as the dashboard adapter lists it. Their old homes
(:mod:`.errors`, :mod:`.resources`, :mod:`.models`) re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

GIB = 1024**3


class LanrayError(Exception):
    """An error whose message is one line a user can act on.

    The CLI prints it as ``lanray-tui: error: MESSAGE`` and exits non-zero; the TUI shows
    it in a notification. Never raise it with a multi-line message.
    """

    exit_code = 1


@dataclass(frozen=True)
class Reading:
    """A number, or ``value=None`` and the reason it is not available.

    JSON: the number itself, or the reason as a string (a string always means n/a).
    """

    value: float | None
    reason: str = ""

    @classmethod
    def na(cls, reason: str) -> Reading:
        return cls(None, reason)

    @property
    def ok(self) -> bool:
        return self.value is not None

    def format(self, spec: str = ".0f", unit: str = "") -> str:
        """``"63 °C"`` with ``unit=" °C"``; ``"n/a"`` when there is no value."""
        return "n/a" if self.value is None else f"{self.value:{spec}}{unit}"

    def __str__(self) -> str:
        return f"n/a: {self.reason}" if self.value is None else f"{self.value:g}"

    def to_json(self) -> float | str:
        return (self.reason or "n/a") if self.value is None else self.value

    @classmethod
    def from_json(cls, v: Any) -> Reading:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return cls(float(v))
        return cls(None, str(v))


@dataclass(frozen=True)
class GpuProcess:
    """A process holding a GPU context."""

    pid: int
    name: str
    memory: int | None  # bytes of GPU memory it uses; None where NVML cannot say
    ray: bool  # Ray's (below ray_root_pid) rather than the owner's
    kind: str = "compute"  # "compute" | "graphics" (a display server, a browser, a game)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "mem": self.memory, "ray": self.ray,
                "kind": self.kind}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GpuProcess:
        return cls(int(d["pid"]), str(d["name"]), d.get("mem"), bool(d["ray"]), d["kind"])


@dataclass(frozen=True)
class GpuSample:
    """One NVIDIA GPU, as NVML sees it."""

    index: int
    uuid: str
    name: str
    utilization: Reading  # percent
    memory_used: Reading  # bytes
    memory_total: Reading  # bytes
    temperature_c: Reading
    power_w: Reading
    processes: tuple[GpuProcess, ...] = ()
    processes_reason: str = ""  # why ``processes`` may be incomplete ("" if it is not)

    @property
    def owner_compute(self) -> list[GpuProcess]:
        """Compute processes that are not Ray's: the owner is using this GPU."""
        return [p for p in self.processes if not p.ray and p.kind == "compute"]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "util": self.utilization.to_json(),
            "mem_used": self.memory_used.to_json(),
            "mem_total": self.memory_total.to_json(),
            "temp_c": self.temperature_c.to_json(),
            "power_w": self.power_w.to_json(),
            "procs": [p.to_json() for p in self.processes],
            "procs_reason": self.processes_reason,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GpuSample:
        return cls(
            index=int(d["index"]),
            uuid=str(d["uuid"]),
            name=str(d["name"]),
            utilization=Reading.from_json(d["util"]),
            memory_used=Reading.from_json(d["mem_used"]),
            memory_total=Reading.from_json(d["mem_total"]),
            temperature_c=Reading.from_json(d["temp_c"]),
            power_w=Reading.from_json(d["power_w"]),
            processes=tuple(GpuProcess.from_json(p) for p in d.get("procs", [])),
            processes_reason=str(d.get("procs_reason", "")),
        )


@dataclass(frozen=True)
class NodeInfo:
    """One Ray node as the head sees it."""

    node_id: str
    ip: str
    name: str
    role: str  # "head" | "worker"
    state: str  # "ALIVE" | "DEAD"
    cpus: float
    gpus: float
    memory_gb: float
    # From the host's heartbeats (absent in a bare Ray row):
    link: str = "n/a"  # "UP" | "UNREACHABLE" | "n/a"
    lending: str = ""  # "lending" | "paused" | "owner-active" | ...
    cpu_pct: float | None = None
    mem_pct: float | None = None
    gpu_pct: float | None = None  # mean utilisation of its GPUs
    gpu_mem_pct: float | None = None  # GPU memory used, of all its GPUs
    gpu_note: str = ""  # why there is no GPU figure ("NVML: no driver", ...)
    runtime: str = ""  # "native" | "docker running" | ...
    lending_reason: str = ""
    lending_until: str = ""  # "until 18:00": when the node stops lending and leaves
    guard_warning: str = ""  # Ray's HTTP ports are open to the LAN: why, and the fix
    ray_restarts: int = 0  # earlier Ray nodes of this machine (restarts, rejoins)
    agent_mb: float | None = None  # the lanray-tui agent's resident memory
    ray_mb: float | None = None  # Ray's processes' resident memory (native runtime)
    # its last resource sample (a resources.Sample; read by models.node_from_status)
    sample: Any = field(default=None, compare=False)

    @classmethod
    def from_ray(cls, row: dict[str, Any]) -> NodeInfo:
        res = row.get("resources_total") or {}
        labels = row.get("labels") or {}
        return cls(
            node_id=str(row.get("node_id", "")),
            ip=str(row.get("node_ip", "")),
            name=str(labels.get("lanray-name") or row.get("node_name") or row.get("node_ip", "")),
            role="head" if row.get("is_head_node") else "worker",
            state=str(row.get("state", "")),
            cpus=float(res.get("CPU", 0.0)),
            gpus=float(res.get("GPU", 0.0)),
            memory_gb=round(float(res.get("memory", 0.0)) / GIB, 2),
        )

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sample"}
        out["resources"] = self.sample.to_json() if self.sample is not None else {}
        return out
