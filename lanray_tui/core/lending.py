"""Owner-first lending: this machine serves the cluster only while its owner is not using it
(HTCondor's desktop policy: keyboard idle, low non-Condor load, start/suspend hysteresis).

Pure logic. :func:`decide` looks at one :class:`~.resources.Sample` and the owner's input
idle time and says what to do now; :class:`Lender` adds hysteresis so that the answer does
not flap. The agent acts on the decision (stops taking work, drains within
``drain_deadline_s``); nothing here touches Ray.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .resources import InputIdle, Sample

LENDING, PAUSED = "lending", "paused"
OWNER_ACTIVE, ON_BATTERY, GPU_BUSY, TOO_HOT = "owner-active", "on-battery", "gpu-busy", "too-hot"
STATES = (LENDING, PAUSED, OWNER_ACTIVE, ON_BATTERY, GPU_BUSY, TOO_HOT)
MANUAL = ("auto", "paused")

# Once withheld for heat, lend again only below the limit minus this (a cooling band).
TEMPERATURE_BAND_C = 5.0

_WAS = {
    OWNER_ACTIVE: "owner was active",
    ON_BATTERY: "was on battery",
    GPU_BUSY: "GPU was busy",
    TOO_HOT: "was too hot",
}


class _Settings(Protocol):
    def __getitem__(self, key: str) -> Any: ...


@dataclass(frozen=True)
class Policy:
    """When to lend. Read from the ``lending.*`` config keys with :meth:`from_config`."""

    # Owner input (keyboard, mouse, terminal) must be idle this long. 0: input never blocks.
    idle_minutes: float = 15.0
    # Non-Ray CPU in cores (CPU-seconds per second), averaged over ~30 s: Sample.owner_load.
    max_owner_load: float = 0.3
    allow_on_battery: bool = False
    # False: withhold while a non-Ray compute process uses a GPU (graphics ones do not count).
    allow_gpu_shared: bool = False
    max_temperature_c: float = 85.0  # any GPU
    max_cpu_temperature_c: float = 95.0  # the CPU package, where a sensor reports it
    # Once withheld, lend again only after every condition has been clear this long.
    resume_after_s: float = 60.0
    # For the agent: how long running Ray work gets to finish once lending stops.
    drain_deadline_s: float = 60.0

    @classmethod
    def from_config(cls, cfg: _Settings, section: str = "lending") -> Policy:
        """A policy from ``cfg[f"{section}.{field}"]`` for each field (a Config or a dict)."""
        values = {}
        for f in dataclasses.fields(cls):
            try:
                values[f.name] = cfg[f"{section}.{f.name}"]
            except KeyError:
                continue  # keep the default
        return cls(**values)


@dataclass(frozen=True)
class Decision:
    """What this machine does now, and one line saying why."""

    state: str  # one of STATES
    reason: str

    @property
    def lending(self) -> bool:
        return self.state == LENDING

    def to_json(self) -> dict[str, str]:
        return {"state": self.state, "reason": self.reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Decision:
        return cls(str(d["state"]), str(d["reason"]))


def ago(seconds: float) -> str:
    """``12 s``, ``4 min``, ``3 h``: a duration the way a person says it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def decide(sample: Sample, idle: InputIdle, policy: Policy, manual: str = "auto") -> Decision:
    """Lend now or not, from this instant alone (no hysteresis: see :class:`Lender`).

    Checked in this order, the first that holds wins: paused by hand, too hot, on battery,
    owner active (input, then CPU), GPU busy. A reading that is n/a never blocks lending.
    """
    if manual not in MANUAL:
        raise ValueError(f"manual must be one of {MANUAL}, not {manual!r}")
    if manual == "paused":
        return Decision(PAUSED, "paused by hand")

    for g in sample.gpus:
        t = g.temperature_c.value
        if t is not None and t > policy.max_temperature_c:
            return Decision(
                TOO_HOT,
                f"too hot: GPU {g.index} at {t:.0f} °C (limit {policy.max_temperature_c:g} °C)",
            )
    t = sample.cpu_temperature_c.value
    if t is not None and t > policy.max_cpu_temperature_c:
        limit = policy.max_cpu_temperature_c
        return Decision(TOO_HOT, f"too hot: CPU at {t:.0f} °C (limit {limit:g} °C)")

    if sample.has_battery and sample.plugged is False and not policy.allow_on_battery:
        pct = sample.battery_percent.value
        return Decision(ON_BATTERY, f"on battery: {pct:.0f} %, not plugged in")

    limit_s = policy.idle_minutes * 60
    if idle.seconds is not None and limit_s > 0 and idle.seconds < limit_s:
        what = idle.device or "input"
        return Decision(OWNER_ACTIVE, f"owner active: {what} used {ago(idle.seconds)} ago")
    if sample.owner_load > policy.max_owner_load:
        return Decision(
            OWNER_ACTIVE,
            f"owner active: non-Ray processes use {sample.owner_load:.2f} cores "
            f"(limit {policy.max_owner_load:g})",
        )

    if not policy.allow_gpu_shared:
        for g in sample.gpus:
            owner = g.owner_compute
            if owner:
                p = owner[0]
                more = f" and {len(owner) - 1} more" if len(owner) > 1 else ""
                return Decision(
                    GPU_BUSY, f"GPU busy: GPU {g.index} used by {p.name} (pid {p.pid}){more}"
                )

    if idle.seconds is None:
        return Decision(LENDING, f"lending; owner input: cannot be read ({idle.reason})")
    if limit_s <= 0:
        return Decision(LENDING, "lending; owner input is not checked (idle_minutes: 0)")
    return Decision(LENDING, f"lending; owner idle {ago(idle.seconds)}")


class Lender:
    """:func:`decide` with hysteresis: once lending stopped for a condition, it starts again
    only after every condition has been clear for ``policy.resume_after_s``, and after heat
    only below the limit minus :data:`TEMPERATURE_BAND_C`.

    Stopping is immediate. A pause by hand is not a condition: resuming by hand lends at
    once if nothing else holds. A new agent starts lending at once if nothing holds.
    """

    def __init__(self, policy: Policy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._held: str | None = None  # the condition that stopped lending, if any
        self._clear_since: float | None = None
        self.decision = Decision(LENDING, "lending")

    def step(self, sample: Sample, idle: InputIdle, manual: str = "auto") -> Decision:
        """Decide for now and remember it (also in ``self.decision``)."""
        policy = self.policy
        if self._held == TOO_HOT:
            policy = dataclasses.replace(
                policy,
                max_temperature_c=policy.max_temperature_c - TEMPERATURE_BAND_C,
                max_cpu_temperature_c=policy.max_cpu_temperature_c - TEMPERATURE_BAND_C,
            )
        d = decide(sample, idle, policy, manual)
        now = self._clock()
        if d.state == PAUSED:
            # The owner chose; resuming by hand should not wait out an older condition.
            self._held, self._clear_since = None, None
        elif d.state != LENDING:
            self._held, self._clear_since = d.state, None
        elif self._held is not None:
            if self._clear_since is None:
                self._clear_since = now
            waited = now - self._clear_since
            if waited < self.policy.resume_after_s:
                left = self.policy.resume_after_s - waited
                d = Decision(
                    self._held,
                    f"{_WAS[self._held]}: clear for {ago(waited)}, lending again in {ago(left)}",
                )
            else:
                self._held, self._clear_since = None, None
        self.decision = d
        return d
