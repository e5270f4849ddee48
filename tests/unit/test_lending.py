"""Owner-first lending, driven through its inputs: a real CPU load, fake input-idle and
battery readings, and a fake clock for the hysteresis."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest

from lanray_tui.core import config
from lanray_tui.core.lending import (
    GPU_BUSY,
    LENDING,
    ON_BATTERY,
    OWNER_ACTIVE,
    PAUSED,
    TOO_HOT,
    Decision,
    Lender,
    Policy,
    decide,
)
from lanray_tui.core.resources import GpuProcess, InputIdle, Reading, Sampler
from tests.helpers.samples import gpu, laptop, sample

IDLE = InputIdle(3600.0, "keyboard")
POLICY = Policy()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# --- decide: one instant ------------------------------------------------------------------


def test_a_quiet_machine_lends() -> None:
    d = decide(sample(), IDLE, POLICY)
    assert d == Decision(LENDING, "lending; owner idle 60 min") and d.lending


def test_owner_input_blocks_until_idle_minutes() -> None:
    d = decide(sample(), InputIdle(12.0, "keyboard"), POLICY)
    assert d == Decision(OWNER_ACTIVE, "owner active: keyboard used 12 s ago")
    d = decide(sample(), InputIdle(14 * 60.0, "terminal pts/3 (ann)"), POLICY)
    assert d.reason == "owner active: terminal pts/3 (ann) used 14 min ago"
    assert decide(sample(), InputIdle(15 * 60.0, "mouse"), POLICY).lending
    assert decide(sample(), InputIdle(5.0, "mouse"), Policy(idle_minutes=0)).lending


def test_unreadable_input_does_not_block_but_says_so() -> None:
    d = decide(sample(), InputIdle.unknown("graphical session, and no input device is readable"),
               POLICY)  # fmt: skip
    assert d.lending
    assert "owner input: cannot be read (graphical session" in d.reason


def test_battery() -> None:
    d = decide(laptop(64.0, plugged=False), IDLE, POLICY)
    assert d == Decision(ON_BATTERY, "on battery: 64 %, not plugged in")
    assert decide(laptop(64.0, plugged=True), IDLE, POLICY).lending
    assert decide(laptop(64.0, plugged=None), IDLE, POLICY).lending  # unknown: no block
    assert decide(laptop(64.0, plugged=False), IDLE, Policy(allow_on_battery=True)).lending


def test_owner_gpu_compute_blocks_unless_shared_is_allowed() -> None:
    ray = GpuProcess(100, "ray::train", 1024**3, ray=True)
    xorg = GpuProcess(7, "Xorg", None, ray=False, kind="graphics")
    blender = GpuProcess(4242, "blender", 2 * 1024**3, ray=False)
    assert decide(sample(gpus=(gpu(procs=(ray, xorg)),)), IDLE, POLICY).lending
    d = decide(sample(gpus=(gpu(procs=(ray, blender)),)), IDLE, POLICY)
    assert d == Decision(GPU_BUSY, "GPU busy: GPU 0 used by blender (pid 4242)")
    assert decide(
        sample(gpus=(gpu(procs=(blender,)),)), IDLE, Policy(allow_gpu_shared=True)
    ).lending


def test_too_hot() -> None:
    d = decide(sample(gpus=(gpu(temp=91.0),)), IDLE, POLICY)
    assert d == Decision(TOO_HOT, "too hot: GPU 0 at 91 °C (limit 85 °C)")
    d = decide(sample(cpu_temperature_c=Reading(99.0)), IDLE, POLICY)
    assert d == Decision(TOO_HOT, "too hot: CPU at 99 °C (limit 95 °C)")
    assert decide(sample(cpu_temperature_c=Reading.na("no sensor")), IDLE, POLICY).lending


def test_owner_cpu_load_blocks() -> None:
    d = decide(sample(owner_load=1.42), IDLE, POLICY)
    assert d == Decision(OWNER_ACTIVE, "owner active: non-Ray processes use 1.42 cores (limit 0.3)")


def test_first_condition_wins_and_manual_pause_beats_all() -> None:
    everything = dataclasses.replace(laptop(20.0, False), owner_load=3.0,
                                     gpus=(gpu(temp=99.0),))  # fmt: skip
    assert decide(everything, InputIdle(1.0, "keyboard"), POLICY).state == TOO_HOT
    assert decide(everything, IDLE, POLICY, manual="paused") == Decision(PAUSED, "paused by hand")
    with pytest.raises(ValueError):
        decide(sample(), IDLE, POLICY, manual="lend")


# --- Lender: hysteresis -------------------------------------------------------------------


def test_lending_stops_at_once_and_resumes_only_after_resume_after_s() -> None:
    clock = Clock()
    lender = Lender(Policy(resume_after_s=60), clock)
    assert lender.step(sample(), IDLE).lending
    assert lender.step(sample(owner_load=2.0), IDLE).state == OWNER_ACTIVE
    clock.t = 5
    d = lender.step(sample(), IDLE)  # the load is gone, but not for long enough
    assert d == Decision(OWNER_ACTIVE, "owner was active: clear for 0 s, lending again in 60 s")
    clock.t = 40
    assert lender.step(sample(), IDLE).reason.endswith("clear for 35 s, lending again in 25 s")
    clock.t = 50  # a blip resets the wait
    assert lender.step(sample(owner_load=2.0), IDLE).state == OWNER_ACTIVE
    clock.t = 51
    assert not lender.step(sample(), IDLE).lending
    clock.t = 110
    assert not lender.step(sample(), IDLE).lending
    clock.t = 111
    assert lender.step(sample(), IDLE).lending
    assert lender.decision.lending


def test_a_flapping_condition_does_not_flap_the_decision() -> None:
    clock = Clock()
    lender = Lender(POLICY, clock)
    states = []
    for i in range(300):  # the owner's load toggles every 10 s for 5 minutes
        clock.t = float(i)
        busy = (i // 10) % 2 == 0
        states.append(lender.step(sample(owner_load=1.0 if busy else 0.0), IDLE).state)
    assert LENDING not in states


def test_heat_must_drop_below_the_limit_minus_a_band() -> None:
    clock = Clock()
    lender = Lender(Policy(resume_after_s=10), clock)
    assert lender.step(sample(gpus=(gpu(temp=90),)), IDLE).state == TOO_HOT
    for t in range(0, 100, 5):  # 83 °C is under 85 but inside the band
        clock.t = float(t)
        assert lender.step(sample(gpus=(gpu(temp=83),)), IDLE).state == TOO_HOT
    clock.t = 100
    assert lender.step(sample(gpus=(gpu(temp=79),)), IDLE).state == TOO_HOT  # waiting
    clock.t = 110
    assert lender.step(sample(gpus=(gpu(temp=79),)), IDLE).lending
    # once lending again, 83 °C is fine
    assert lender.step(sample(gpus=(gpu(temp=83),)), IDLE).lending


def test_manual_pause_and_resume() -> None:
    clock = Clock()
    lender = Lender(POLICY, clock)
    assert lender.step(sample(), IDLE, "paused") == Decision(PAUSED, "paused by hand")
    clock.t = 1
    assert lender.step(sample(), IDLE, "auto").lending  # the owner chose: no waiting
    # a condition held before the pause does not make a resume by hand wait either
    assert lender.step(laptop(50.0, False), IDLE).state == ON_BATTERY
    assert lender.step(laptop(50.0, True), IDLE, "paused").state == PAUSED
    assert lender.step(laptop(50.0, True), IDLE, "auto").lending
    # but a condition still present after the resume holds
    lender.step(sample(), IDLE, "paused")
    assert lender.step(sample(), InputIdle(3.0, "mouse"), "auto").state == OWNER_ACTIVE


# --- configuration ------------------------------------------------------------------------


def test_policy_from_config_keys_with_defaults_for_missing_ones() -> None:
    p = Policy.from_config({"lending.idle_minutes": 5, "lending.allow_on_battery": True})
    assert p == Policy(idle_minutes=5, allow_on_battery=True)
    assert Policy.from_config(config.load()) == Policy()  # works on a real Config too


# --- a real load generator ----------------------------------------------------------------


def test_a_real_cpu_hog_makes_the_owner_active() -> None:
    """A busy loop that is not Ray's, for ~2 s: non-Ray CPU rises, lending stops."""
    sampler = Sampler(None, owner_window_s=1.0)
    lender = Lender(Policy(max_owner_load=0.5))
    time.sleep(0.3)
    before = sampler.sample()
    hog = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 2\nwhile time.time() < end: pass"]
    )
    try:
        decisions, loads = [], []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.25)
            s = sampler.sample()
            loads.append(s.owner_load)
            decisions.append(lender.step(s, IDLE))
    finally:
        hog.kill()
        hog.wait()
    assert max(loads) > before.owner_load + 0.4, (before.owner_load, loads)
    busy = [d for d in decisions if d.state == OWNER_ACTIVE]
    assert busy, decisions
    assert busy[-1].reason.startswith("owner active: non-Ray processes use ")
