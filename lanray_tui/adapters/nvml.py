"""NVIDIA GPUs through NVML (nvidia-ml-py). The only module that imports ``pynvml``, and
only on first use: a machine without the NVIDIA driver pays nothing and gets "n/a" with a
reason instead (nvitop's ``NA`` and ``nvmlQuery(..., ignore_errors=True)``).

Every query goes through :meth:`Nvml._query`, which turns an NVML error into a reason, so
one unsupported reading (power on some laptop GPUs, memory per process in a container)
leaves the others intact. ``lib`` is the ``pynvml`` module or, in tests, a small object
with the same few functions.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from ..core.types import GpuProcess, GpuSample, Reading
from . import system

# NVML return codes (nvml.h); stable across driver versions.
_NOT_SUPPORTED, _NO_PERMISSION, _DRIVER_NOT_LOADED = 3, 4, 9
_LIBRARY_NOT_FOUND, _FUNCTION_NOT_FOUND, _GPU_IS_LOST = 12, 13, 15
_REASONS = {
    _NOT_SUPPORTED: "not supported",
    _NO_PERMISSION: "no permission",
    _DRIVER_NOT_LOADED: "NVML: driver not loaded",
    _LIBRARY_NOT_FOUND: "NVML: no NVIDIA driver (libnvidia-ml.so.1 not found)",
    _FUNCTION_NOT_FOUND: "not supported by this driver",
    _GPU_IS_LOST: "GPU is lost (fell off the bus)",
}
_TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "value", None)
    if isinstance(code, int) and code in _REASONS:
        return _REASONS[code]
    return f"NVML: {exc}" if str(exc) else f"NVML: {type(exc).__name__}"


class Nvml:
    """NVML, initialised on first use; a failed init is retried every ``retry_s``.

    Thread-safe: the agent's sampler and a CLI command may share the default instance.
    """

    def __init__(
        self,
        lib: Any = None,
        *,
        retry_s: float = 60.0,
        procs_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lib = lib
        self._retry_s, self._procs_ttl, self._clock = retry_s, procs_ttl_s, clock
        self._lock = threading.Lock()
        self._ready = False
        self._failed_at = -math.inf
        self._reason = ""
        self._handles: list[Any] = []
        self._static: dict[int, tuple[str, str]] = {}  # index -> (uuid, name)
        self._procs: dict[int, tuple[float, list[tuple[int, int | None, str]], str]] = {}

    def _init(self) -> str:
        """Empty once NVML is up, else the reason it is not (cached for ``retry_s``)."""
        if self._ready:
            return ""
        now = self._clock()
        if now - self._failed_at < self._retry_s:
            return self._reason
        try:
            if self._lib is None:
                import pynvml  # lazy: only this module imports it

                self._lib = pynvml
            self._lib.nvmlInit()
            count = int(self._lib.nvmlDeviceGetCount())
            self._handles = [self._lib.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except ImportError:
            self._failed_at, self._reason = now, "nvidia-ml-py is not installed"
            return self._reason
        except Exception as exc:
            self._failed_at, self._reason = now, _reason(exc)
            return self._reason
        self._ready, self._reason = True, ""
        return ""

    def _query(self, fn: str, *args: Any) -> tuple[Any, str]:
        """(value, "") or (None, reason): an NVML call that never raises."""
        try:
            return getattr(self._lib, fn)(*args), ""
        except Exception as exc:
            return None, _reason(exc)

    def count(self) -> tuple[int, str]:
        """How many GPUs NVML sees, and why none when it sees none."""
        with self._lock:
            reason = self._init()
            if reason:
                return 0, reason
            return len(self._handles), "" if self._handles else "NVML sees no GPU"

    def uuids(self) -> list[str]:
        """Each GPU's UUID (its index where the UUID cannot be read)."""
        with self._lock:
            if self._init():
                return []
            return [self._identity(i)[0] or str(i) for i in range(len(self._handles))]

    def driver(self) -> tuple[str, str]:
        """(driver version, the CUDA version the driver supports, "12.4" style); empty
        strings where NVML is not available or cannot say."""
        with self._lock:
            if self._init():
                return "", ""
            version, _ = self._query("nvmlSystemGetDriverVersion")
            cuda, _ = self._query("nvmlSystemGetCudaDriverVersion")
        text = f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if isinstance(cuda, int) else ""
        return _text(version), text

    def read(self, is_ray: Callable[[int], bool]) -> tuple[list[GpuSample], str]:
        """Every GPU now, processes flagged Ray's or not with ``is_ray(pid)``.

        Returns ([], reason) where NVML is not available.
        """
        with self._lock:
            reason = self._init()
            if reason:
                return [], reason
            return [self._gpu(i, h, is_ray) for i, h in enumerate(self._handles)], ""

    def _identity(self, index: int) -> tuple[str, str]:
        if index not in self._static:
            h = self._handles[index]
            uuid, _ = self._query("nvmlDeviceGetUUID", h)
            name, _ = self._query("nvmlDeviceGetName", h)
            self._static[index] = (_text(uuid), _text(name) or "NVIDIA GPU")
        return self._static[index]

    def _gpu(self, index: int, h: Any, is_ray: Callable[[int], bool]) -> GpuSample:
        uuid, name = self._identity(index)
        util, why_util = self._query("nvmlDeviceGetUtilizationRates", h)
        mem, why_mem = self._query("nvmlDeviceGetMemoryInfo", h)
        temp, why_temp = self._query("nvmlDeviceGetTemperature", h, _TEMPERATURE_GPU)
        power, why_power = self._query("nvmlDeviceGetPowerUsage", h)  # milliwatts
        procs, why_procs = self._processes(index, h)
        return GpuSample(
            index=index,
            uuid=uuid,
            name=name,
            utilization=_reading(getattr(util, "gpu", None), why_util),
            memory_used=_reading(getattr(mem, "used", None), why_mem),
            memory_total=_reading(getattr(mem, "total", None), why_mem),
            temperature_c=_reading(temp, why_temp),
            power_w=_reading(power / 1000 if power is not None else None, why_power),
            processes=tuple(
                GpuProcess(pid, system.process_name(pid), used, is_ray(pid), kind)
                for pid, used, kind in procs
            ),
            processes_reason=why_procs,
        )

    def _processes(self, index: int, h: Any) -> tuple[list[tuple[int, int | None, str]], str]:
        """(pid, GPU memory, kind) of each process on the GPU, cached for ``procs_ttl_s``."""
        now = self._clock()
        cached = self._procs.get(index)
        if cached is not None and now - cached[0] < self._procs_ttl:
            return cached[1], cached[2]
        found: dict[int, tuple[int, int | None, str]] = {}
        reasons = []
        # Graphics first so that a process in both lists ends up "compute".
        for kind, fn in (
            ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
            ("compute", "nvmlDeviceGetComputeRunningProcesses"),
        ):
            rows, why = self._query(fn, h)
            if why:
                reasons.append(f"{kind} processes: {why}")
                continue
            for row in rows or []:
                pid = int(row.pid)
                used = getattr(row, "usedGpuMemory", None)
                found[pid] = (pid, int(used) if used is not None else None, kind)
        result = (sorted(found.values()), "; ".join(reasons))
        self._procs[index] = (now, *result)
        return result


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return "" if v is None else str(v)


def _reading(value: Any, reason: str) -> Reading:
    if value is None:
        return Reading.na(reason or "not available")
    return Reading(float(value))


_default: Nvml | None = None
_default_lock = threading.Lock()


def default() -> Nvml:
    """The process-wide NVML (initialised once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Nvml()
        return _default


def gpu_count_and_reason() -> tuple[int, str]:
    """(GPUs NVML sees, "" or why there are none), e.g. ``(0, "NVML: driver not loaded")``."""
    return default().count()


def device_request_ids() -> list[str]:
    """IDs for Docker's ``DeviceRequest(device_ids=...)``: each GPU's UUID (its index where
    the UUID cannot be read); empty without NVML."""
    return default().uuids()


def driver_versions() -> tuple[str, str]:
    """(driver version, CUDA version the driver supports); ("", "") without NVML."""
    return default().driver()
