"""Resource sampling with the real psutil and /proc: CPU split between Ray and the owner,
JSON round trips, cost, the owner-input sources, and the sparkline helpers."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lanray_tui.adapters import system
from lanray_tui.core.resources import (
    GpuProcess,
    GpuSample,
    InputIdle,
    InputWatcher,
    Reading,
    Sample,
    Sampler,
    TtlCache,
    _ray_seconds,
)
from lanray_tui.core.sparkline import (
    GPU_UTILIZATION_THRESHOLDS,
    MEMORY_UTILIZATION_THRESHOLDS,
    History,
    level,
    sparkline,
)

BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


class NoGpus:
    def read(self, is_ray: object) -> tuple[list[GpuSample], str]:
        return [], "test: no GPUs"


def spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        for child in psutil.Process(p.pid).children(recursive=True) if p.poll() is None else []:
            child.kill()
        p.kill()
        p.wait()


def gpu(temp: float | None = 60.0) -> GpuSample:
    return GpuSample(
        index=0,
        uuid="GPU-1",
        name="NVIDIA RTX 4090",
        utilization=Reading(37.0),
        memory_used=Reading(2.0 * 1024**3),
        memory_total=Reading(24.0 * 1024**3),
        temperature_c=Reading(temp) if temp is not None else Reading.na("not supported"),
        power_w=Reading.na("not supported"),
        processes=(
            GpuProcess(42, "python", 1024**3, ray=True),
            GpuProcess(7, "Xorg", None, False, "graphics"),
        ),
    )


# --- plain data ---------------------------------------------------------------------------


def test_reading_prints_and_round_trips_through_json() -> None:
    assert str(Reading(63.0)) == "63"
    assert str(Reading.na("no battery")) == "n/a: no battery"
    assert Reading(63.0).format(unit=" °C") == "63 °C" and Reading.na("x").format() == "n/a"
    for r in (Reading(0.0), Reading(12.5), Reading.na("NVML: driver not loaded")):
        assert Reading.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_sample_round_trips_and_stays_small() -> None:
    s = Sampler(None, gpus=NoGpus()).sample()
    wire = json.dumps(s.to_json())
    assert Sample.from_json(json.loads(wire)) == s
    assert len(wire) < 500, wire
    with_gpus = Sample.from_json({**s.to_json(), "gpus": [gpu().to_json(), gpu(None).to_json()]})
    wire = json.dumps(with_gpus.to_json())
    assert Sample.from_json(json.loads(wire)) == with_gpus
    assert with_gpus.gpus[1].temperature_c == Reading.na("not supported")
    assert len(wire) < 1500, len(wire)


def test_ttl_cache_calls_again_only_after_the_ttl() -> None:
    now = [0.0]
    calls: list[int] = []

    def count() -> int:
        calls.append(1)
        return len(calls)

    cached = TtlCache(count, 10.0, lambda: now[0])
    assert cached() == 1 and cached() == 1
    now[0] = 9.9
    assert cached() == 1
    now[0] = 10.0
    assert cached() == 2


# --- the real machine ---------------------------------------------------------------------


def test_a_real_sample_is_sane() -> None:
    sampler = Sampler(None, gpus=NoGpus())
    time.sleep(0.2)
    s = sampler.sample()
    assert s.cpu_count == psutil.cpu_count()
    assert 0 <= s.cpu_percent <= 100 and 0 <= s.owner_cpu_percent <= 100
    assert 0 < s.memory_used < s.memory_total == psutil.virtual_memory().total
    assert s.load_1m >= 0
    battery = psutil.sensors_battery()
    if battery is None:
        assert s.battery_percent == Reading.na("no battery") and s.plugged is None
        assert not s.has_battery
    else:
        assert s.battery_percent.value == pytest.approx(battery.percent, abs=5)
    assert s.cpu_temperature_c.ok or s.cpu_temperature_c.reason
    assert s.gpus == () and s.gpus_reason == "test: no GPUs"


def test_process_tree_and_descendants(reaper: list[subprocess.Popen[bytes]]) -> None:
    root = spawn("import subprocess, time\nsubprocess.Popen(['sleep', '30'])\ntime.sleep(30)")
    reaper.append(root)
    deadline = time.monotonic() + 5
    while len(system.process_tree(root.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    tree = system.process_tree(root.pid)
    (child,) = tree - {root.pid}
    assert system.is_descendant(child, root.pid) and system.is_descendant(root.pid, root.pid)
    assert not system.is_descendant(os.getpid(), root.pid)
    assert system.process_tree(2**22 + 1) == set()
    st = system.proc_stat(child)
    assert st is not None and st.ppid == root.pid
    assert 0 < st.start_s <= system.seconds_since_boot()


def _cpu_s(pid: int) -> float:
    st = system.proc_stat(pid)
    assert st is not None
    return st.cpu_s


def _sample_for(sampler: Sampler, seconds: float) -> tuple[float, float]:
    """Sample every 0.25 s for ``seconds``: (Ray's, the owner's) CPU seconds in that time."""
    ray = owner = 0.0
    last = time.perf_counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.25)
        s = sampler.sample()
        now = time.perf_counter()
        machine_s = s.cpu_count * (now - last)
        ray += s.ray_cpu_percent / 100 * machine_s
        owner += s.owner_cpu_percent / 100 * machine_s
        last = now
    return ray, owner


def test_ray_cpu_is_not_the_owner_s(reaper: list[subprocess.Popen[bytes]]) -> None:
    """A busy loop below the Ray root counts as Ray's, the same loop elsewhere as the
    owner's. The Ray child starts after the sampler listed the tree, so it is found late.

    Compared with what the processes themselves used, so that other load on the machine
    (which is the owner's) does not matter.
    """
    busy = f"subprocess.run([{sys.executable!r}, '-c', {BUSY.format(s=1.2)!r}])"
    root = spawn(f"import subprocess, time\ntime.sleep(0.3)\n{busy}\ntime.sleep(30)")
    reaper.append(root)
    sampler = Sampler(root.pid, gpus=NoGpus(), owner_window_s=1.0, tree_ttl_s=0.5)
    root_before = _cpu_s(root.pid)
    ray_s, _ = _sample_for(sampler, 2.2)
    used_by_ray = _cpu_s(root.pid) - root_before  # the root and its reaped busy child
    assert used_by_ray > 0.2, "the busy child got no CPU"
    assert ray_s == pytest.approx(used_by_ray, rel=0.2, abs=0.15)

    hog = spawn(BUSY.format(s=1.2))
    reaper.append(hog)
    ray_s, owner_s = _sample_for(sampler, 1.7)
    _, _, usage = os.wait4(hog.pid, 0)
    used_by_hog = usage.ru_utime + usage.ru_stime
    assert used_by_hog > 0.2, "the hog got no CPU"
    assert owner_s > 0.8 * used_by_hog - 0.1, (owner_s, used_by_hog)
    assert ray_s < 0.1


def _st(cpu_s: float, start_s: float, ppid: int = 1, children_s: float = 0.0) -> system.ProcStat:
    return system.ProcStat(ppid, cpu_s, start_s, children_s)


def test_late_found_ray_processes_are_credited_to_ray() -> None:
    listing = 100.0  # seconds since boot of the listing before this one
    prev = {(10, 50.0): _st(3.0, 50.0)}
    now = {(10, 50.0): _st(3.5, 50.0), (11, 101.0): _st(2.0, 101.0), (12, 80.0): _st(9.0, 80.0)}
    # 10 grew by 0.5; 11 started after the last listing: all 2.0 s were missed, count them;
    # 12 was there before but outside the tree: no history, counts from now on.
    assert _ray_seconds(prev, now, listing) == pytest.approx(2.5)
    assert _ray_seconds(prev, now, None) == pytest.approx(0.5)  # first listing: a baseline


def test_reaped_ray_processes_are_not_counted_twice() -> None:
    # 13 (child of 10) used 5 s, of which 4 s were counted before; then it exited and 10
    # reaped it: 10's children time grew by all 5 s. Only 1 s is new.
    prev = {(10, 50.0): _st(3.0, 50.0), (13, 60.0): _st(4.0, 60.0, ppid=10)}
    now = {(10, 50.0): _st(8.0, 50.0, children_s=5.0)}
    assert _ray_seconds(prev, now, 100.0) == pytest.approx(1.0)
    # reaped by a process outside the tree: nothing to take back, nothing added
    prev = {(10, 50.0): _st(3.0, 50.0), (13, 60.0): _st(4.0, 60.0, ppid=999)}
    assert _ray_seconds(prev, {(10, 50.0): _st(3.0, 50.0)}, 100.0) == 0.0
    # a parent that did not gain the child's time (auto-reaped): take back nothing
    prev = {(10, 50.0): _st(3.0, 50.0), (13, 60.0): _st(4.0, 60.0, ppid=10)}
    assert _ray_seconds(prev, {(10, 50.0): _st(3.2, 50.0)}, 100.0) == pytest.approx(0.2)


def test_sampling_is_cheap(reaper: list[subprocess.Popen[bytes]]) -> None:
    children = "ps = [subprocess.Popen(['sleep', '30']) for _ in range(20)]"
    root = spawn(f"import subprocess, time\n{children}\ntime.sleep(30)")
    reaper.append(root)
    time.sleep(0.5)
    sampler = Sampler(root.pid, gpus=NoGpus())
    sampler.sample()  # first battery and sensor reads
    costs = []
    for _ in range(20):
        t = time.perf_counter()
        s = sampler.sample()
        costs.append((time.perf_counter() - t) * 1000)
    assert len(sampler._tree) >= 21
    assert s.cost_ms > 0
    assert statistics.median(costs) < 20, costs  # well under 50 ms, even on a busy CI box


# --- owner input sources ------------------------------------------------------------------


def test_interrupts_of_keyboards_and_touchpads_are_counted(tmp_path: Path) -> None:
    f = tmp_path / "interrupts"
    f.write_text(
        "           CPU0       CPU1\n"
        "  1:         10         20   IO-APIC   1-edge      i8042\n"
        " 12:        100          0   IO-APIC  12-edge      i8042\n"
        " 16:          5          5   IO-APIC  16-fasteoi   i2c_designware.0, idma64.0\n"
        " 51:          7          0  intel-gpio  3  ELAN0501:00 i2c_hid\n"
        "NMI:          0          0   Non-maskable interrupts\n"
    )
    assert system.input_irq_count(str(f)) == 137
    f.write_text("           CPU0\n 16:  5  IO-APIC 16-fasteoi ehci_hcd:usb1\n")
    assert system.input_irq_count(str(f)) is None
    assert system.input_irq_count(str(tmp_path / "missing")) is None


def test_input_devices_say_only_that_there_was_input(tmp_path: Path) -> None:
    (tmp_path / "devices").write_text(
        'I: Bus=0019\nN: Name="Power Button"\nH: Handlers=kbd event0\n\n'
        'I: Bus=0011\nN: Name="AT Translated Set 2 keyboard"\nH: Handlers=sysrq kbd event3 leds\n\n'
        'I: Bus=0003\nN: Name="Logitech USB Optical Mouse"\nH: Handlers=mouse0 event5\n'
    )  # fmt: skip
    dev = tmp_path / "input"
    dev.mkdir()
    for name in ("event0", "event3", "event5"):
        os.mkfifo(dev / name)  # a stand-in that can be opened and written like a device
    devices = system.InputDevices(str(tmp_path / "devices"), str(dev))
    writers = {n: os.open(dev / n, os.O_WRONLY | os.O_NONBLOCK) for n in ("event3", "event5")}
    try:
        assert sorted(devices.fds.values()) == ["keyboard", "mouse"]  # not the power button
        assert devices.activity() is None
        os.write(writers["event5"], b"\0" * 24)
        assert devices.activity() == "mouse"
        assert devices.activity() is None  # drained
    finally:
        devices.close()
        for fd in writers.values():
            os.close(fd)


class Wall:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_newest_terminal_input_wins() -> None:
    wall = Wall()
    sessions = [
        system.Login("ann", "pts/3", "10.0.0.9", wall.t - 300),
        system.Login("bob", "tty1", "", wall.t - 12),
    ]
    watch = InputWatcher(logins=lambda: sessions, irq_count=lambda: None, devices=None, wall=wall)
    assert watch() == InputIdle(12.0, "terminal tty1 (bob)")


def test_device_sources_report_idle_since_the_watcher_started() -> None:
    wall, irq = Wall(), [500]
    watch = InputWatcher(logins=list, irq_count=lambda: irq[0], devices=None, wall=wall)
    wall.t += 100
    assert watch() == InputIdle(100.0, "keyboard or touchpad")  # nothing seen yet: a lower bound
    irq[0] += 3
    wall.t += 5
    assert watch() == InputIdle(0.0, "keyboard or touchpad")
    wall.t += 40
    assert watch().seconds == 40.0


def test_graphical_session_without_a_device_cannot_be_read() -> None:
    wall = Wall()
    sessions = [system.Login("ann", ":0", ":0", None), system.Login("ann", "pts/1", "", wall.t - 9)]
    watch = InputWatcher(logins=lambda: sessions, irq_count=lambda: None, devices=None, wall=wall)
    idle = watch()
    assert idle.seconds is None and "graphical session" in idle.reason
    # with a readable mouse it can
    used = ["mouse"]

    def mouse() -> str | None:
        return used.pop(0) if used else None

    watch = InputWatcher(logins=lambda: sessions, irq_count=lambda: None, devices=mouse, wall=wall)
    assert watch() == InputIdle(0.0, "mouse")


def test_nothing_readable_is_unknown_and_the_real_watcher_does_not_raise() -> None:
    watch = InputWatcher(logins=list, irq_count=lambda: None, devices=None)
    assert watch().seconds is None and watch().reason
    real = InputWatcher()
    try:
        idle = real()
        assert idle.seconds is None or idle.seconds >= 0
        assert (idle.seconds is None) == bool(idle.reason)
    finally:
        real.close()


# --- sparkline ----------------------------------------------------------------------------


def test_sparkline_and_levels() -> None:
    assert sparkline([0, 50, 100, None, 150, -5]) == "▁▅█ █▁"
    assert sparkline([10, 20], width=4) == "  ▁▂"
    h = History(size=3)
    for v in (1.0, 2.0, 3.0, 100.0):
        h.push(v)
    assert h.values() == [2.0, 3.0, 100.0] and len(h) == 3 and h.last() == 100.0
    assert h.sparkline() == "▁▁█"
    assert [level(v, GPU_UTILIZATION_THRESHOLDS) for v in (None, 5, 50, 75)] == [
        "n/a", "light", "moderate", "heavy"
    ]  # fmt: skip
    assert level(79, MEMORY_UTILIZATION_THRESHOLDS) == "moderate"
