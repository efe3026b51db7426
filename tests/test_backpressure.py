"""Backpressure decisions (pure): which level a load enters, hysteresis on the way down, and
what each level admits."""

from __future__ import annotations

import itertools

import pytest

from parley.scos import BackpressureLevel as L
from parley_runtime.signals.backpressure import (
    BackpressureState,
    Load,
    Policy,
    admission_cap,
    highest,
    step,
    triggers,
)

POLICY = Policy(ttfa_slo_ms=250, hold_s=10)
IDLE = Load(active=0, capacity=8)


def run(loads: list[tuple[float, Load]], policy: Policy = POLICY) -> list[L]:
    """Step through (time, load) pairs; return the level after each."""
    state, levels = BackpressureState(), []
    for now, load in loads:
        state = step(state, load, policy, now)
        levels.append(state.level)
    return levels


@pytest.mark.parametrize(
    ("load", "level"),
    [
        (IDLE, L.NORMAL),
        (Load(active=3, capacity=8), L.NORMAL),
        (Load(active=4, capacity=8), L.VISUALS_OFF),
        (Load(active=6, capacity=8), L.BRIEF),
        (Load(active=8, capacity=8), L.BRIEF),  # full: the hard cap refuses, not a level
        (Load(active=1, capacity=8, loop_lag_p95_ms=60), L.VISUALS_OFF),
        (Load(active=1, capacity=8, loop_lag_p95_ms=160), L.ADMISSION_LIMITED),
        (Load(active=1, capacity=8, loop_lag_p95_ms=300), L.SESSION_REJECT),
        (Load(active=1, capacity=8, ttfa_p95_ms=230, ttfa_samples=5), L.BRIEF),
        (Load(active=1, capacity=8, ttfa_p95_ms=245, ttfa_samples=5), L.ADMISSION_LIMITED),
        (Load(active=1, capacity=8, ttfa_p95_ms=250, ttfa_samples=5), L.SESSION_REJECT),
        (Load(active=1, capacity=8, frames_sent=1000, late_frame_ratio=0.03), L.BRIEF),
        (Load(active=1, capacity=8, turns=20, failed_turns=2), L.SESSION_REJECT),
    ],
)
def test_the_highest_triggered_level_wins(load: Load, level: L) -> None:
    assert highest(load, POLICY) is level


def test_an_idle_pod_is_not_held_back_by_its_past_latency() -> None:
    slow = Load(0, 8, ttfa_p95_ms=900, ttfa_samples=20, turns=40, failed_turns=20)
    assert highest(slow, POLICY) is L.NORMAL
    assert highest(Load(1, 8, ttfa_p95_ms=900, ttfa_samples=20), POLICY) is L.SESSION_REJECT


def test_too_few_samples_trigger_nothing() -> None:
    assert highest(Load(1, 8, ttfa_p95_ms=900, ttfa_samples=4), POLICY) is L.NORMAL
    assert highest(Load(1, 8, frames_sent=100, late_frame_ratio=0.5), POLICY) is L.NORMAL
    assert highest(Load(1, 8, turns=19, failed_turns=19), POLICY) is L.NORMAL


def test_reasons_name_the_measurement_and_the_threshold() -> None:
    (reason,) = triggers(Load(7, 8), POLICY, L.BRIEF)
    assert reason == "sessions 7/8 >= 75% of capacity"
    (reason,) = triggers(Load(1, 8, ttfa_p95_ms=300, ttfa_samples=9), POLICY, L.SESSION_REJECT)
    assert reason == "TTFA p95 300 ms >= 250 ms"


def test_a_spike_enters_its_level_at_once() -> None:
    spike = Load(1, 8, loop_lag_p95_ms=400)
    assert run([(0, IDLE), (1, spike)]) == [L.NORMAL, L.SESSION_REJECT]


def test_recovery_waits_the_hold_and_steps_down_one_level_at_a_time() -> None:
    spike = Load(1, 8, loop_lag_p95_ms=400)
    loads = [(0.0, spike)] + [(float(t), IDLE) for t in range(1, 60)]
    levels = run(loads)
    entered = {level: levels.index(level) for level in L}
    assert levels[0] is L.SESSION_REJECT
    # calm from t=1; each level holds 10 s of calm before the next step down
    assert entered[L.ADMISSION_LIMITED] == 11
    assert entered[L.BRIEF] == 21
    assert entered[L.VISUALS_OFF] == 31
    assert entered[L.NORMAL] == 41
    assert levels[41:] == [L.NORMAL] * (len(levels) - 41)


def test_load_between_the_release_and_entry_thresholds_holds_the_level() -> None:
    """Entered at 60 ms lag; 45 ms is under the entry (50) but over the release (40)."""
    loads = [(0.0, Load(1, 8, loop_lag_p95_ms=60))]
    loads += [(float(t), Load(1, 8, loop_lag_p95_ms=45)) for t in range(1, 30)]
    assert set(run(loads)) == {L.VISUALS_OFF}


def test_a_trigger_returning_during_the_hold_restarts_it() -> None:
    high, calm = Load(1, 8, loop_lag_p95_ms=60), IDLE
    loads = [(0.0, high), (1.0, calm), (9.0, calm), (10.0, high), (11.0, calm), (19.0, calm)]
    loads += [(21.0, calm)]
    levels = run(loads)
    assert levels[:-1] == [L.VISUALS_OFF] * 6
    assert levels[-1] is L.NORMAL


def test_flapping_load_does_not_flap_the_level() -> None:
    """A load that crosses the entry threshold every other second changes the level once."""
    loads = [
        (float(t), Load(4 if t % 2 == 0 else 3, 8)) for t in range(60)
    ]  # 50 % / 37.5 %: release is 40 %
    levels = run(loads)
    changes = sum(1 for a, b in itertools.pairwise(levels) if a != b)
    assert levels[0] is L.VISUALS_OFF and changes == 0


def test_admission_cap_per_level() -> None:
    policy = Policy(limited_fraction=0.5)
    assert [admission_cap(level, 8, policy) for level in L] == [8, 8, 8, 4, 0]
    assert admission_cap(L.ADMISSION_LIMITED, 1, policy) == 1


def test_capacity_can_drive_every_level_when_configured() -> None:
    policy = Policy(load=(0.25, 0.5, 0.75, 1.0))
    assert [highest(Load(n, 4), policy) for n in range(5)] == list(L)
