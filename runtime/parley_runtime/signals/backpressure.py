"""Backpressure: measured load → one of five levels, with hysteresis. Pure; the caller
evaluates it about once a second with an explicit `now`.

A level is entered as soon as any of its triggers holds (the highest such level wins, so a
sudden overload jumps straight to it). It is left only after every trigger of the current
level has stayed below a lower threshold (`release` × the entry threshold) for `hold_s`, and
then one level at a time, each step waiting its own hold: recovery is gradual and never flaps.

The effects (what each level degrades) live with their consumers; `admission_cap` is here
because it is a decision, not an effect: how many sessions a pod admits at a level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from parley.scos import BackpressureLevel

LEVELS = tuple(BackpressureLevel)


@dataclass(frozen=True)
class Load:
    """What the pod measured over the signal window."""

    active: int
    capacity: int
    loop_lag_p95_ms: float = 0.0
    frames_sent: int = 0
    late_frame_ratio: float = 0.0
    ttfa_p95_ms: float | None = None
    ttfa_samples: int = 0
    turns: int = 0
    failed_turns: int = 0


Steps = tuple[float, float, float, float]
#: Per level 1..4; None: this trigger does not apply at that level.
OptionalSteps = tuple[float | None, float | None, float | None, float | None]


@dataclass(frozen=True)
class Policy:
    """Entry thresholds for levels 1..4 (index 0 is VISUALS_OFF). Defaults follow the seed's
    reference table where it has one (TTFA at 80/90/96/100 % of the SLO, error rate > 5 % at
    the top level) and measurements of this runtime otherwise (loop lag, late frames).

    Sessions/capacity drive only the first two levels by default: a full pod already refuses
    new sessions by its hard cap, and re-admits the moment a slot frees, which a held
    admission level would not. The admission levels come from measured degradation."""

    ttfa_slo_ms: float = 250.0
    load: OptionalSteps = (0.5, 0.75, None, None)
    ttfa_of_slo: Steps = (0.8, 0.9, 0.96, 1.0)
    loop_lag_ms: Steps = (50, 100, 150, 250)
    late_frames: Steps = (0.01, 0.02, 0.05, 0.1)
    error_rate: float = 0.05  # SESSION_REJECT only
    min_ttfa_samples: int = 5
    min_frames: int = 250  # 5 s of one session's audio before late frames count
    min_turns: int = 20  # before the error rate counts
    release: float = 0.8
    hold_s: float = 10.0
    limited_fraction: float = 0.5  # ADMISSION_LIMITED admits up to this share of capacity


def triggers(load: Load, policy: Policy, level: BackpressureLevel, scale: float = 1.0) -> list[str]:
    """The triggers of `level` that hold, each as a readable reason; `scale` < 1 gives the
    release thresholds."""
    if level is BackpressureLevel.NORMAL:
        return []
    i = level - 1
    reasons = []
    utilization = load.active / max(1, load.capacity)
    load_step = policy.load[i]
    if load_step is not None and load.active and utilization >= load_step * scale:
        reasons.append(
            f"sessions {load.active}/{load.capacity} >= {load_step * scale:.0%} of capacity"
        )
    ttfa_limit = policy.ttfa_slo_ms * policy.ttfa_of_slo[i] * scale
    if (
        load.active  # the window outlives the sessions: an idle pod is not slow
        and load.ttfa_p95_ms is not None
        and load.ttfa_samples >= policy.min_ttfa_samples
        and load.ttfa_p95_ms >= ttfa_limit
    ):
        reasons.append(f"TTFA p95 {load.ttfa_p95_ms:.0f} ms >= {ttfa_limit:.0f} ms")
    lag_limit = policy.loop_lag_ms[i] * scale
    if load.loop_lag_p95_ms >= lag_limit:
        reasons.append(f"event-loop lag p95 {load.loop_lag_p95_ms:.0f} ms >= {lag_limit:.0f} ms")
    late_limit = policy.late_frames[i] * scale
    if load.frames_sent >= policy.min_frames and load.late_frame_ratio >= late_limit:
        reasons.append(f"late frames {load.late_frame_ratio:.1%} >= {late_limit:.1%}")
    if level is BackpressureLevel.SESSION_REJECT and load.active and load.turns >= policy.min_turns:
        rate = load.failed_turns / load.turns
        if rate > policy.error_rate * scale:
            reasons.append(f"failed turns {rate:.1%} > {policy.error_rate * scale:.1%}")
    return reasons


def highest(load: Load, policy: Policy, scale: float = 1.0) -> BackpressureLevel:
    for level in reversed(LEVELS[1:]):
        if triggers(load, policy, level, scale):
            return level
    return BackpressureLevel.NORMAL


@dataclass(frozen=True)
class BackpressureState:
    level: BackpressureLevel = BackpressureLevel.NORMAL
    since: float = 0.0
    reasons: tuple[str, ...] = ()
    calm_since: float | None = None  # when the release triggers of this level last all cleared

    @property
    def name(self) -> str:
        return self.level.name


def step(state: BackpressureState, load: Load, policy: Policy, now: float) -> BackpressureState:
    """The next state. Up at once to the highest level triggered; down one level after the
    current level's release triggers have stayed clear for `policy.hold_s`."""
    entered = highest(load, policy)
    if entered > state.level:
        return BackpressureState(entered, now, tuple(triggers(load, policy, entered)))
    held = triggers(load, policy, state.level, policy.release)
    if held or state.level is BackpressureLevel.NORMAL:
        return replace(state, reasons=tuple(held), calm_since=None)
    calm_since = state.calm_since if state.calm_since is not None else now
    if now - calm_since < policy.hold_s:
        return replace(state, calm_since=calm_since)
    lower = BackpressureLevel(state.level - 1)
    # the calm goes on: the next step down is one more hold away, not two
    return BackpressureState(
        lower, now, tuple(triggers(load, policy, lower, policy.release)), calm_since=now
    )


def admission_cap(level: BackpressureLevel, capacity: int, policy: Policy) -> int:
    """How many sessions the pod may hold at `level` (new offers beyond it get 503)."""
    if level is BackpressureLevel.SESSION_REJECT:
        return 0
    if level is BackpressureLevel.ADMISSION_LIMITED:
        return max(1, math.floor(capacity * policy.limited_fraction))
    return capacity
