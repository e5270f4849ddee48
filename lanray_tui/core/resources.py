"""What this machine is doing, sampled about once a second by its agent.

CPU, memory, load, battery, CPU temperature and each NVIDIA GPU, and how much of the CPU
and the GPUs goes to the owner rather than to Ray. A :class:`Sample` is small and
JSON-serialisable: it rides in each worker's 1-per-second heartbeat to the host.

A reading that cannot be taken is a :class:`Reading` with no value and a reason
(nvitop's ``NA``), never an exception: ``Sampler.sample()`` does not raise.

Ray's processes are ``ray_root_pid`` (the ``ray start`` the agent supervises) and every
process below it; everything else, except the sampling process itself, is the owner's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from ..adapters import nvml, system
from .types import GpuProcess, GpuSample, Reading

__all__ = [
    "GpuProcess",
    "GpuSample",
    "GpuSource",
    "InputIdle",
    "InputWatcher",
    "Reading",
    "Sample",
    "Sampler",
    "TtlCache",
]

if TYPE_CHECKING:
    from collections.abc import Iterable

T = TypeVar("T")
Clock = Callable[[], float]


class TtlCache(Generic[T]):
    """The result of ``fn`` for ``ttl_s`` seconds (nvitop's ``ttl_cache``, for one value)."""

    def __init__(self, fn: Callable[[], T], ttl_s: float, clock: Clock = time.monotonic) -> None:
        self._fn, self._ttl, self._clock = fn, ttl_s, clock
        self._value: T | None = None
        self._at = -math.inf

    def __call__(self) -> T:
        now = self._clock()
        if self._value is None or now - self._at >= self._ttl:
            self._value, self._at = self._fn(), now
        return self._value

    def clear(self) -> None:
        self._value, self._at = None, -math.inf


@dataclass(frozen=True)
class Sample:
    """One look at this machine. ``to_json()`` is about 300 bytes without GPUs and about
    250 more per GPU."""

    time: float  # wall clock, seconds since the epoch
    cpu_count: int
    cpu_percent: float  # the whole machine, 0-100, over the last interval
    owner_cpu_percent: float  # non-Ray processes, 0-100 of the machine, last interval
    owner_load: float  # non-Ray CPU in cores, averaged exponentially over ~30 s
    ray_cpu_percent: float  # Ray's processes, 0-100 of the machine, last interval
    load_1m: float
    memory_used: int  # bytes
    memory_total: int  # bytes
    battery_percent: Reading  # n/a "no battery" on a desktop
    plugged: bool | None  # on AC power; None without a battery or when unknown
    cpu_temperature_c: Reading
    gpus: tuple[GpuSample, ...] = ()
    gpus_reason: str = ""  # why there are no GPUs ("NVML: driver not loaded"), "" if fine
    cost_ms: float = 0.0  # what taking this sample cost

    @property
    def has_battery(self) -> bool:
        return self.battery_percent.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "cpus": self.cpu_count,
            "cpu_pct": self.cpu_percent,
            "owner_cpu_pct": self.owner_cpu_percent,
            "owner_load": self.owner_load,
            "ray_cpu_pct": self.ray_cpu_percent,
            "load_1m": self.load_1m,
            "mem_used": self.memory_used,
            "mem_total": self.memory_total,
            "battery_pct": self.battery_percent.to_json(),
            "plugged": self.plugged,
            "cpu_temp_c": self.cpu_temperature_c.to_json(),
            "gpus": [g.to_json() for g in self.gpus],
            "gpus_reason": self.gpus_reason,
            "cost_ms": self.cost_ms,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sample:
        return cls(
            time=float(d["time"]),
            cpu_count=int(d["cpus"]),
            cpu_percent=float(d["cpu_pct"]),
            owner_cpu_percent=float(d["owner_cpu_pct"]),
            owner_load=float(d["owner_load"]),
            ray_cpu_percent=float(d["ray_cpu_pct"]),
            load_1m=float(d["load_1m"]),
            memory_used=int(d["mem_used"]),
            memory_total=int(d["mem_total"]),
            battery_percent=Reading.from_json(d["battery_pct"]),
            plugged=d.get("plugged"),
            cpu_temperature_c=Reading.from_json(d["cpu_temp_c"]),
            gpus=tuple(GpuSample.from_json(g) for g in d.get("gpus", [])),
            gpus_reason=str(d.get("gpus_reason", "")),
            cost_ms=float(d.get("cost_ms", 0.0)),
        )


class GpuSource(Protocol):
    """What the sampler needs from a GPU reader: ``adapters.nvml.Nvml`` on a real machine,
    a small fake in tests."""

    def read(self, is_ray: Callable[[int], bool]) -> tuple[list[GpuSample], str]: ...


@dataclass
class _CpuState:
    at: float  # monotonic
    machine: system.CpuSeconds
    ours: dict[tuple[int, float], system.ProcStat] = field(default_factory=dict)  # (pid, start)


class Sampler:
    """Takes :class:`Sample` s of this machine. Keep one and call ``sample()`` about once a
    second: CPU percentages are over the interval since the previous call.

    Cost: the Ray process tree is re-listed every ``tree_ttl_s`` (one read of
    ``/proc/PID/stat`` per process on the machine); between, only Ray's own processes
    are read. A Ray process started in between is found at the next listing and its CPU
    time since it started is then counted as Ray's, so the owner's average stays right.
    Battery and CPU temperature are read every ``slow_ttl_s``.

    ``gpus`` reads the GPUs; without one, the process-wide NVML reader
    (``adapters.nvml.default()``) that the rest of the agent shares.
    """

    def __init__(
        self,
        ray_root_pid: int | None = None,
        *,
        gpus: GpuSource | None = None,
        owner_window_s: float = 30.0,
        tree_ttl_s: float = 5.0,
        slow_ttl_s: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._gpus = gpus if gpus is not None else nvml.default()
        self._root = ray_root_pid
        self._window = owner_window_s
        self._tree_ttl = tree_ttl_s
        self._clock = clock
        self._tree: set[int] = set()
        self._tree_at = -math.inf  # monotonic time of the last listing
        self._tree_boot: float | None = None  # the same, in seconds since boot
        self._prev_tree_boot: float | None = None
        self._owner_load = 0.0
        self._battery = TtlCache(system.battery, slow_ttl_s, clock)
        self._cpu_temp = TtlCache(system.cpu_temperature, slow_ttl_s, clock)
        self._cpu = self._cpu_now()

    @property
    def ray_root_pid(self) -> int | None:
        return self._root

    @ray_root_pid.setter
    def ray_root_pid(self, pid: int | None) -> None:
        """Ray was (re)started: follow the new tree from the next sample on."""
        if pid != self._root:
            self._root = pid
            self._tree_at = -math.inf

    def is_ray(self, pid: int) -> bool:
        """True if ``pid`` is Ray's (``ray_root_pid`` or below it)."""
        if pid in self._tree:
            return True
        return self._root is not None and system.is_descendant(pid, self._root)

    def sample(self) -> Sample:
        """Read everything once. Never raises: what fails becomes n/a with a reason."""
        t0 = time.perf_counter()
        prev, cpu = self._cpu, self._cpu_now()
        self._cpu = cpu
        n = system.cpu_count()
        d_total = cpu.machine.total - prev.machine.total
        interval = d_total / n if d_total > 0 else max(cpu.at - prev.at, 1e-6)
        busy = _pct(cpu.machine.busy - prev.machine.busy, d_total)
        ray_s = _ray_seconds(prev.ours, cpu.ours, self._prev_tree_boot)
        owner_s = max(0.0, cpu.machine.processes - prev.machine.processes - ray_s)
        alpha = 1.0 - math.exp(-max(cpu.at - prev.at, 0.0) / self._window)
        self._owner_load += alpha * (owner_s / interval - self._owner_load)

        try:
            mem_used, mem_total = system.memory_used_total()
        except (OSError, RuntimeError):
            mem_used = mem_total = 0
        try:
            load = system.load_1m()
        except OSError:
            load = 0.0
        pct, plugged, why = self._battery()
        temp, temp_why = self._cpu_temp()
        try:
            gpus, gpus_reason = self._gpus.read(self.is_ray)
        except Exception as exc:  # an adapter bug must not stop the heartbeat
            gpus, gpus_reason = [], f"GPU reading failed: {exc}"
        return Sample(
            time=round(time.time(), 3),
            cpu_count=n,
            cpu_percent=round(busy, 1),
            owner_cpu_percent=round(min(100.0, _pct(owner_s, d_total)), 1),
            owner_load=round(max(0.0, self._owner_load), 3),
            ray_cpu_percent=round(min(100.0, _pct(ray_s, d_total)), 1),
            load_1m=round(load, 2),
            memory_used=mem_used,
            memory_total=mem_total,
            battery_percent=Reading(pct, why),
            plugged=plugged if pct is not None else None,
            cpu_temperature_c=Reading(temp, temp_why),
            gpus=tuple(gpus),
            gpus_reason=gpus_reason,
            cost_ms=round((time.perf_counter() - t0) * 1000, 2),
        )

    def _cpu_now(self) -> _CpuState:
        now = self._clock()
        if now - self._tree_at >= self._tree_ttl:
            self._refresh_tree(now)
        ours: dict[tuple[int, float], system.ProcStat] = {}
        for pid in self._tree:
            st = system.proc_stat(pid)
            if st is not None:
                ours[(pid, st.start_s)] = st
        return _CpuState(now, system.cpu_seconds(), ours)

    def _refresh_tree(self, now: float) -> None:
        self._prev_tree_boot = self._tree_boot
        self._tree_boot = system.seconds_since_boot()
        tree = system.process_tree(self._root) if self._root is not None else set()
        # The sampling process is lanray-tui's, not the owner's.
        self._tree = tree | {os.getpid()}
        self._tree_at = now


def _ray_seconds(
    prev: dict[tuple[int, float], system.ProcStat],
    now: dict[tuple[int, float], system.ProcStat],
    prev_listing_boot: float | None,
) -> float:
    """CPU seconds Ray's processes used between two looks, keyed by (pid, start time).

    A process seen both times counts its growth. A process first seen now counts all its
    time if it started after the listing before this one (it was missed, and its time so
    far went to the owner), else nothing. A process gone since that a Ray parent reaped
    moved its whole time into the parent's children time: what was already counted is
    taken back, at most what the parent gained. Otherwise (reaped by init) it is lost.
    """
    total = 0.0
    for key, st in now.items():
        if key in prev:
            total += max(0.0, st.cpu_s - prev[key].cpu_s)
        elif prev_listing_boot is not None and st.start_s >= prev_listing_boot:
            total += st.cpu_s
    both = {key[0]: key for key in now if key in prev}
    gained = {pid: now[k].children_s - prev[k].children_s for pid, k in both.items()}
    for key, st in prev.items():
        if key not in now and st.ppid in gained:
            back = min(st.cpu_s, max(0.0, gained[st.ppid]))
            gained[st.ppid] -= back
            total -= back
    return max(0.0, total)


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


@dataclass(frozen=True)
class InputIdle:
    """How long since the owner last used a keyboard, mouse or terminal here.

    ``seconds=None``: it cannot be read, and ``reason`` says why.
    """

    seconds: float | None
    device: str = ""  # "keyboard", "mouse", "keyboard or touchpad", "terminal pts/3 (ann)"
    reason: str = ""

    @classmethod
    def unknown(cls, reason: str) -> InputIdle:
        return cls(None, "", reason)


class InputWatcher:
    """The default owner-input source: a callable returning :class:`InputIdle`.

    Reads, without X or Wayland: the atime of logged-in users' terminals (``w``'s IDLE),
    interrupt counts of built-in keyboards and touchpads (``/proc/interrupts``), and, where
    this user may open them (root, group ``input``), keyboards and mice under
    ``/dev/input``. A device source that has seen nothing since the watcher started
    reports idle since then (a lower bound), so a fresh agent waits the full idle time.

    A graphical session with no readable device is "cannot be read": its terminals' times
    do not move when someone types into the desktop.
    """

    def __init__(
        self,
        *,
        logins: Callable[[], Iterable[system.Login]] = system.logins,
        irq_count: Callable[[], int | None] = system.input_irq_count,
        devices: Callable[[], str | None] | Literal["auto"] | None = "auto",
        wall: Clock = time.time,
    ) -> None:
        """Each source is injectable; ``devices=None`` leaves ``/dev/input`` alone."""
        self._logins, self._irq, self._wall = logins, irq_count, wall
        self._devices: system.InputDevices | None = None
        if devices == "auto":
            self._devices = system.InputDevices()
            devices = self._devices.activity if self._devices.fds else None
        self._activity = devices
        started = wall()
        self._irq_last = self._irq()
        self._irq_at = started  # last time the interrupt count moved (or the start)
        self._dev_at, self._dev_kind = started, "keyboard or mouse"

    def __call__(self) -> InputIdle:
        now = self._wall()
        seen: list[tuple[float, str]] = []
        graphical = False
        try:
            sessions = list(self._logins())
        except Exception:  # utmp unreadable: treat as no one logged in
            sessions = []
        for s in sessions:
            if s.input_at is not None:
                seen.append((s.input_at, f"terminal {s.terminal} ({s.user})"))
            if s.terminal.startswith(":") or s.host.startswith(":") or s.terminal == "seat0":
                graphical = True
        devices = False
        irq = self._irq()
        if irq is not None:
            if self._irq_last is not None and irq != self._irq_last:
                self._irq_at = now
            self._irq_last = irq
            seen.append((self._irq_at, "keyboard or touchpad"))
            devices = True
        if self._activity is not None:
            kind = self._activity()
            if kind is not None:
                self._dev_at, self._dev_kind = now, kind
            seen.append((self._dev_at, self._dev_kind))
            devices = True
        if graphical and not devices:
            return InputIdle.unknown("graphical session, and no input device is readable")
        if not seen:
            return InputIdle.unknown("no terminal in use and no input device is readable")
        at, device = max(seen)
        return InputIdle(max(0.0, now - at), device)

    def close(self) -> None:
        if self._devices is not None:
            self._devices.close()
