"""NVML adapter: the real "n/a" path (no NVIDIA driver here), and the parsing and
Ray/owner flagging against a minimal fake of the few pynvml functions it calls."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import psutil
import pytest

from lanray_tui.adapters import nvml
from lanray_tui.core.resources import Sampler

HAVE_GPU = nvml.Nvml().count()[0] > 0

no_gpu = pytest.mark.skipif(HAVE_GPU, reason="this machine has a working NVIDIA driver")


# --- the real library, no driver ------------------------------------------------------------


def test_importing_the_adapter_does_not_import_pynvml() -> None:
    code = "import sys, lanray_tui.adapters.nvml; print('pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@no_gpu
def test_without_a_driver_everything_is_na_with_a_reason() -> None:
    count, reason = nvml.gpu_count_and_reason()
    assert count == 0
    assert reason.startswith("NVML: ")
    assert nvml.device_request_ids() == []
    gpus, why = nvml.Nvml().read(lambda pid: False)
    assert gpus == [] and why == reason


@no_gpu
def test_sampler_reports_the_nvml_reason_and_does_not_raise() -> None:
    s = Sampler(None).sample()
    assert s.gpus == ()
    assert s.gpus_reason.startswith("NVML: ")


# --- a fake at the seam: the pynvml module object ---------------------------------------------


class FakeError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 999: "Unknown Error"}.get(self.value, str(self.value))


@dataclass
class Proc:  # pynvml's field names
    pid: int
    usedGpuMemory: int | None


@dataclass
class Util:
    gpu: int


@dataclass
class Mem:
    used: int
    total: int


class FakeNvml:
    """The pynvml functions the adapter calls, for two GPUs; GPU 1 is a laptop part that
    does not report power, and errors are pynvml-like (``.value`` is the NVML code)."""

    NVMLError = FakeError

    def __init__(self, procs: dict[int, dict[str, list[Proc]]], init_error: int = 0) -> None:
        self.procs = procs
        self.init_error = init_error
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def nvmlInit(self) -> None:
        self._count("init")
        if self.init_error:
            raise FakeError(self.init_error)

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-0000-{h}"

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA GeForce RTX 4090" if h == 0 else b"NVIDIA RTX A1000 Laptop GPU"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Util:
        return Util(37 if h == 0 else 0)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Mem:
        return Mem(used=2 * 1024**3, total=24 * 1024**3)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        assert sensor == 0
        return 64 if h == 0 else 51

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise FakeError(3)
        return 215_500  # milliwatts

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Proc]:
        self._count("procs")
        return self.procs.get(h, {}).get("compute", [])

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[Proc]:
        return self.procs.get(h, {}).get("graphics", [])


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_readings_are_parsed_and_units_converted() -> None:
    gpus, reason = nvml.Nvml(FakeNvml({})).read(lambda pid: False)
    assert reason == ""
    g0, g1 = gpus
    assert (g0.index, g0.uuid, g0.name) == (0, "GPU-0000-0", "NVIDIA GeForce RTX 4090")
    assert g0.utilization.value == 37
    assert g0.memory_used.value == 2 * 1024**3 and g0.memory_total.value == 24 * 1024**3
    assert g0.temperature_c.value == 64
    assert g0.power_w.value == pytest.approx(215.5)
    # one unsupported reading is n/a with a reason; the others stay
    assert g1.power_w.value is None and g1.power_w.reason == "not supported"
    assert str(g1.power_w) == "n/a: not supported"
    assert g1.temperature_c.value == 51


def test_processes_are_flagged_ray_or_owner_and_deduplicated() -> None:
    me = os.getpid()
    fake = FakeNvml(
        {
            0: {
                "compute": [Proc(me, 1024**3), Proc(4242, None)],
                "graphics": [Proc(4242, None), Proc(777, 50 * 1024**2)],
            }
        }
    )
    gpus, _ = nvml.Nvml(fake).read(lambda pid: pid == 4242)
    procs = {p.pid: p for p in gpus[0].processes}
    assert set(procs) == {me, 4242, 777}
    assert procs[4242].ray and procs[4242].kind == "compute"  # in both lists: compute wins
    assert not procs[me].ray and procs[me].memory == 1024**3
    assert procs[me].name == psutil.Process(me).name()
    assert procs[777].kind == "graphics" and procs[777].name == "?"  # no such process here
    # the owner's compute process is what makes a GPU "busy"; graphics ones do not count
    assert [p.pid for p in gpus[0].owner_compute] == [me]
    assert gpus[1].processes == ()


def test_process_lists_are_cached_for_a_short_ttl() -> None:
    clock, fake = Clock(), FakeNvml({})
    n = nvml.Nvml(fake, procs_ttl_s=2.0, clock=clock)
    n.read(lambda pid: False)
    n.read(lambda pid: False)
    assert fake.calls["procs"] == 2  # once per GPU
    clock.t += 2.0
    n.read(lambda pid: False)
    assert fake.calls["procs"] == 4


def test_failed_init_is_a_reason_and_is_retried_after_a_while() -> None:
    clock, fake = Clock(), FakeNvml({}, init_error=9)
    n = nvml.Nvml(fake, retry_s=60.0, clock=clock)
    assert n.count() == (0, "NVML: driver not loaded")
    assert n.read(lambda pid: False) == ([], "NVML: driver not loaded")
    assert fake.calls["init"] == 1  # not retried every second
    fake.init_error = 0
    clock.t += 60.0
    assert n.count() == (2, "")
    assert n.uuids() == ["GPU-0000-0", "GPU-0000-1"]


def test_an_unknown_error_keeps_nvml_s_own_words() -> None:
    n = nvml.Nvml(FakeNvml({}, init_error=999))
    assert n.count() == (0, "NVML: Unknown Error")


def test_an_adapter_that_raises_does_not_stop_the_sampler() -> None:
    class Broken:
        def read(self, is_ray: Any) -> Any:
            raise RuntimeError("boom")

    s = Sampler(None, gpus=Broken()).sample()
    assert s.gpus == () and "boom" in s.gpus_reason


def test_the_sampler_reads_the_gpus_it_is_given_and_else_the_shared_nvml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = Sampler(None, gpus=nvml.Nvml(FakeNvml({}))).sample()
    assert [g.uuid for g in given.gpus] == ["GPU-0000-0", "GPU-0000-1"]
    # Without one, the process-wide reader that runtime's GPU count uses too.
    monkeypatch.setattr(nvml, "_default", nvml.Nvml(FakeNvml({}, init_error=9)))
    default = Sampler(None).sample()
    assert default.gpus == () and default.gpus_reason == "NVML: driver not loaded"
