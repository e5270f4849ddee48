"""Resource samples for tests: a quiet desktop, a laptop, a GPU."""

from __future__ import annotations

import dataclasses
from typing import Any

from lanray_tui.core.resources import GpuProcess, GpuSample, Reading, Sample


def sample(**changes: Any) -> Sample:
    """A quiet desktop on AC power with no battery, no GPU; ``changes`` override fields."""
    base = Sample(
        time=0.0,
        cpu_count=8,
        cpu_percent=3.0,
        owner_cpu_percent=1.0,
        owner_load=0.05,
        ray_cpu_percent=0.0,
        load_1m=0.2,
        memory_used=4 * 1024**3,
        memory_total=32 * 1024**3,
        battery_percent=Reading.na("no battery"),
        plugged=None,
        cpu_temperature_c=Reading(50.0),
    )
    return dataclasses.replace(base, **changes)


def laptop(percent: float, plugged: bool | None) -> Sample:
    return sample(battery_percent=Reading(percent), plugged=plugged)


def gpu(temp: float = 60.0, procs: tuple[GpuProcess, ...] = ()) -> GpuSample:
    na = Reading.na("not supported")
    return GpuSample(0, "GPU-1", "RTX 4090", Reading(0.0), na, na, Reading(temp), na, procs)
