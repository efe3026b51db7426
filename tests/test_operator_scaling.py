"""The autoscaling decision (pure): demand and bounds, the tolerance band, backpressure, the
asymmetric stabilization, drain-before-delete, failed scrapes, a restart mid-drain, and an hour
of simulated load without flapping."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import pytest

from parley.scos import (
    Backpressure,
    BackpressureLevel,
    Latency,
    LatencySet,
    Media,
    Percentiles,
    Scos,
    Sessions,
    Turns,
)
from parley_operator.api import VoiceDeploymentSpec
from parley_operator.scaling import (
    Decision,
    Direction,
    PodSignal,
    ScalerState,
    ScalingPolicy,
    decide,
    demand_of,
)

NORMAL = BackpressureLevel.NORMAL
BRIEF = BackpressureLevel.BRIEF
LIMITED = BackpressureLevel.ADMISSION_LIMITED
REJECT = BackpressureLevel.SESSION_REJECT

SPEC = VoiceDeploymentSpec.model_validate(
    {
        "llm": {"endpoint": "http://llm:8000/v1", "model": "m"},
        "runtime": {"replicas": {"min": 1, "max": 10}, "sessionsPerPod": 8},
    }
)


def policy(**changes: Any) -> ScalingPolicy:
    return replace(ScalingPolicy.from_spec(SPEC), **changes)


def scos(
    active: int, *, level: BackpressureLevel = NORMAL, draining: bool = False, held_s: float = 0
) -> Scos:
    nothing = LatencySet(
        ttfa=Percentiles(samples=0), v2v=Percentiles(samples=0), barge_in=Percentiles(samples=0)
    )
    return Scos(
        generated_at=0.0,
        uptime_s=60.0,
        ready=not draining,
        draining=draining,
        sessions=Sessions(
            active=active,
            capacity=8,
            admission_cap=0 if draining else 8,
            admitted_total=active,
            rejected_total=0,
            cut_total=0,
        ),
        backpressure=Backpressure(
            level=level, name=level.name, since=-held_s, reasons=[], changes_total=0
        ),
        latency=Latency(window_s=60.0, steady=nothing, warm_up=nothing),
        turns=Turns(),
        media=Media(event_loop_lag_p95_ms=1.0, frames_sent=0, late_frame_ratio=0.0),
    )


def pod(
    name: str,
    active: int,
    *,
    level: BackpressureLevel = NORMAL,
    ready: bool = True,
    draining_since: float | None = None,
    held_s: float = 0,
) -> PodSignal:
    draining = draining_since is not None
    return PodSignal(
        name=name,
        ready=ready and not draining,
        scos=scos(active, level=level, draining=draining, held_s=held_s),
        draining_since=draining_since,
    )


def unscraped(name: str, *, draining_since: float | None = None) -> PodSignal:
    return PodSignal(
        name=name, ready=draining_since is None, scos=None, draining_since=draining_since
    )


def starting(name: str) -> PodSignal:
    return PodSignal(name=name, ready=False, scos=None)


def run(
    pods: Callable[[float], list[PodSignal]],
    times: Iterable[float],
    *,
    replicas: int,
    scaling: ScalingPolicy | None = None,
    state: ScalerState | None = None,
) -> list[Decision]:
    """Decide at each time, carrying the state and the replicas (nothing else is applied)."""
    decisions = []
    state = state or ScalerState()
    for now in times:
        decision = decide(scaling or policy(), replicas, pods(now), state, now)
        decisions.append(decision)
        state, replicas = decision.state, decision.replicas
    return decisions


# -- the policy and the demand -----------------------------------------------------------------


def test_the_policy_comes_from_the_spec_with_its_defaults() -> None:
    p = ScalingPolicy.from_spec(SPEC)
    assert (p.min_replicas, p.max_replicas, p.sessions_per_pod) == (1, 10, 8)
    assert (p.target_utilization_pct, p.buffer_sessions, p.tolerance_pct) == (70, 1, 10)
    assert (p.scale_up_stabilization_s, p.scale_down_stabilization_s) == (30, 300)
    assert (p.drain_timeout_s, p.backpressure_window_s) == (600, 3)
    assert (p.interval_s, p.scrape_timeout_s, p.enabled) == (5, 2, True)


@pytest.mark.parametrize(
    ("sessions", "changes", "pods"),
    [
        (14, {}, 3),  # (14 + 1) / 5.6 = 2.7
        (0, {}, 1),  # the buffer alone
        (0, {"min_replicas": 0, "buffer_sessions": 0}, 0),
        (0, {"min_replicas": 2}, 2),
        (11, {}, 3),  # (11 + 1) / 5.6 = 2.14: a little over is a pod more
        (10, {}, 2),  # 11 / 5.6 = 1.96
        (500, {}, 10),  # max
        (16, {"target_utilization_pct": 100, "buffer_sessions": 0}, 2),  # exactly 2.0
    ],
)
def test_demand_is_sessions_plus_buffer_over_the_target(
    sessions: int, changes: dict[str, int], pods: int
) -> None:
    assert demand_of(policy(**changes), sessions).replicas == pods


def test_the_bounds_are_named_in_the_reason() -> None:
    assert demand_of(policy(), 500).describe(policy()).endswith("= 89.5 → 10 pods (max 10)")
    assert (
        demand_of(policy(min_replicas=2), 0)
        .describe(policy(min_replicas=2))
        .endswith("= 0.2 → 2 pods (min 2)")
    )
    assert demand_of(policy(), 0).describe(policy()).endswith("= 0.2 → 1 pods")


def test_scale_up_is_at_once_and_by_as_many_pods_as_demand_says() -> None:
    decision = decide(policy(), 2, [pod("a", 10), pod("b", 10)], ScalerState(), now=100.0)
    assert decision.direction == Direction.UP and decision.replicas == 4
    assert decision.reason.startswith("demand (20 active + 1 buffer) / (8 × 70 %) = 3.8 → 4 pods")
    assert decision.state.last_scale_up == 100.0


def test_the_tolerance_band_holds() -> None:
    # 3 pods: (17 + 1) / 5.6 = 3.2 pods is 7 % over: held; (18 + 1) / 5.6 = 3.4 is 13 % over.
    held = decide(policy(), 3, [pod("a", 6), pod("b", 6), pod("c", 5)], ScalerState(), 0.0)
    assert held.direction == Direction.HOLD and held.replicas == 3
    grown = decide(policy(), 3, [pod("a", 6), pod("b", 6), pod("c", 6)], ScalerState(), 0.0)
    assert grown.direction == Direction.UP and grown.replicas == 4
    # Without a band the first already grows.
    strict = decide(
        policy(tolerance_pct=0), 3, [pod("a", 6), pod("b", 6), pod("c", 5)], ScalerState(), 0.0
    )
    assert strict.replicas == 4


def test_max_and_min_are_respected() -> None:
    full = [pod(f"p{i}", 8, level=REJECT) for i in range(10)]
    at_max = run(lambda now: full, range(0, 60, 5), replicas=10)
    assert {d.replicas for d in at_max} == {10}
    assert "at max 10" in at_max[-1].reason
    assert {d.direction for d in at_max} == {Direction.HOLD}
    # Below min (min raised in the spec): up at once, stabilization or not.
    below = decide(
        policy(min_replicas=3), 1, [pod("a", 0)], ScalerState(last_scale_up=99.0), now=100.0
    )
    assert below.replicas == 3 and "below min 3" in below.reason
    # And never below min, however idle.
    idle = run(
        lambda now: [pod("a", 0), pod("b", 0)],
        range(0, 1200, 5),
        replicas=2,
        scaling=policy(min_replicas=2),
    )
    assert {d.direction for d in idle} == {Direction.HOLD}


# -- backpressure ------------------------------------------------------------------------------


def test_sustained_admission_pressure_scales_up_after_the_window() -> None:
    def pods(now: float) -> list[PodSignal]:
        return [pod("a", 3, level=LIMITED), pod("b", 2)]

    decisions = run(pods, [0.0, 2.0, 4.0], replicas=2)
    assert [d.direction for d in decisions] == [Direction.HOLD, Direction.HOLD, Direction.UP]
    assert decisions[-1].replicas == 3
    assert "pod a at ADMISSION_LIMITED for 4 s" in decisions[-1].reason


def test_the_pods_own_pressure_duration_counts_from_the_first_scrape() -> None:
    # Seen once, but the pod says it has been limiting for 4 s: past the window already.
    (decision,) = run(
        lambda now: [pod("a", 3, level=LIMITED, held_s=4), pod("b", 2)], [100.0], replicas=2
    )
    assert (decision.direction, decision.replicas) == (Direction.UP, 3)
    assert "pod a at ADMISSION_LIMITED for 4 s" in decision.reason
    # Held for less than the window by its own account: the operator waits.
    (held,) = run(
        lambda now: [pod("a", 3, level=LIMITED, held_s=2), pod("b", 2)], [100.0], replicas=2
    )
    assert held.direction == Direction.HOLD
    assert held.state.pressure_since == {"a": 98.0}


def test_a_single_blip_of_pressure_does_not() -> None:
    levels = {0.0: REJECT, 5.0: NORMAL, 10.0: REJECT, 15.0: BRIEF, 20.0: NORMAL}

    def pods(now: float) -> list[PodSignal]:
        return [pod("a", 3, level=levels[now]), pod("b", 2)]

    decisions = run(pods, levels, replicas=2)
    assert {d.direction for d in decisions} == {Direction.HOLD}
    assert decisions[2].state.pressure_since == {"a": 10.0}  # the window starts over
    assert decisions[-1].state.pressure_since == {}


def test_pressure_waits_for_a_pod_that_is_still_starting() -> None:
    pods = [pod("a", 3, level=REJECT), pod("b", 2), starting("c")]
    state = ScalerState(pressure_since={"a": 0.0})
    decision = decide(policy(), 3, pods, state, now=60.0)
    assert decision.direction == Direction.HOLD and decision.replicas == 3
    assert "waiting for 1 starting pod(s)" in decision.reason


def test_pressure_on_a_draining_pod_takes_it_back_first() -> None:
    pods = [pod("a", 3, level=LIMITED), pod("b", 2), pod("c", 1, draining_since=0.0)]
    state = ScalerState(pressure_since={"a": 0.0}, draining={"c": 0.0})
    decision = decide(policy(), 3, pods, state, now=20.0)
    assert decision.direction == Direction.UP and decision.undrain == ("c",)
    assert decision.replicas == 3 and decision.state.draining == {}


# -- stabilization -----------------------------------------------------------------------------


def test_scale_up_stabilization() -> None:
    load = {0.0: 10, 10.0: 20, 20.0: 20, 30.0: 20}

    def pods(now: float) -> list[PodSignal]:
        return [pod("a", load[now]), pod("b", load[now])]

    decisions = run(pods, load, replicas=2)
    assert [d.replicas for d in decisions] == [4, 4, 4, 8]
    assert "last scale-up 10 s ago (< 30 s)" in decisions[1].reason
    assert decisions[-1].state.last_scale_up == 30.0


LOW = [pod("a", 3), pod("b", 1), pod("c", 2)]  # (6 + 1) / 5.6 = 1.25 → 2 pods, 3 running


def test_scale_down_waits_the_whole_window_then_drains_the_emptiest_pod() -> None:
    decisions = run(lambda now: LOW, range(0, 305, 5), replicas=3)
    assert {d.direction for d in decisions[:-1]} == {Direction.HOLD}
    assert "low for 295 s of 300 s" in decisions[-2].reason
    last = decisions[-1]
    assert last.direction == Direction.DOWN and last.drain == ("b",)
    assert last.replicas == 3  # lowered only once b is empty
    assert last.state.draining == {"b": 300.0}
    assert "low for 300 s: draining b (1 sessions)" in last.reason


def test_a_rise_within_the_window_starts_it_over() -> None:
    def pods(now: float) -> list[PodSignal]:
        return [pod("a", 3), pod("b", 1), pod("c", 11 if now == 150 else 2)]  # 2.9 pods at 150

    decisions = run(pods, range(0, 460, 5), replicas=3)
    assert {d.direction for d in decisions[:-1]} == {Direction.HOLD}
    assert decisions[-1].direction == Direction.DOWN  # 300 s after 155


def test_ties_are_broken_by_name_and_not_ready_pods_are_never_drained() -> None:
    pods = [pod("d", 1), pod("c", 1), pod("e", 0, ready=False), starting("f")]
    state = ScalerState(low_since=0.0, low_peak=1)
    decision = decide(policy(), 4, pods, state, now=300.0)
    assert decision.drain == ("c",)


# -- the drain ---------------------------------------------------------------------------------


def draining(b_active: int, since: float = 300.0) -> list[PodSignal]:
    return [pod("a", 3), pod("b", b_active, draining_since=since), pod("c", 2)]


DRAINING_B = ScalerState(draining={"b": 300.0})


def test_replicas_are_lowered_by_one_only_once_the_drained_pod_is_empty() -> None:
    waiting = decide(policy(), 3, draining(1), DRAINING_B, now=305.0)
    assert waiting.direction == Direction.HOLD and waiting.replicas == 3
    assert waiting.drain == () and waiting.drained == ()
    done = decide(policy(), 3, draining(0), waiting.state, now=310.0)
    assert done.direction == Direction.DOWN and done.replicas == 2 and done.drained == ("b",)
    assert done.state.draining == {} and done.state.retired == ("b",)
    # b is still listed until the ReplicaSet deletes it: it is not lowered twice.
    again = decide(policy(), 2, draining(0), done.state, now=315.0)
    assert again.replicas == 2 and again.drained == () and again.undrain == ()
    gone = decide(policy(), 2, [pod("a", 3), pod("c", 2)], again.state, now=320.0)
    assert gone.state.retired == ()


def test_a_drained_pod_the_replicaset_kept_is_taken_back() -> None:
    """Lowered to 2, the ReplicaSet deleted another pod (a Pending one goes first): b is one of
    the 2 now, and draining it for good would leave the runtime a pod short."""
    done = ScalerState(retired=("b",))
    kept = decide(policy(), 2, [pod("a", 3), pod("b", 0, draining_since=300.0)], done, 320.0)
    assert kept.undrain == ("b",) and kept.state.retired == () and kept.replicas == 2
    assert "pod b was kept by the ReplicaSet" in kept.reason


def test_a_drain_that_times_out_is_lowered_too() -> None:
    waiting = run(lambda now: draining(2), range(305, 900, 5), replicas=3, state=DRAINING_B)
    assert {d.replicas for d in waiting} == {3}
    timed_out = decide(policy(), 3, draining(2), waiting[-1].state, now=900.0)
    assert timed_out.replicas == 2 and timed_out.drained == ("b",)
    assert "pod b still has 2 sessions after the drain timeout (600 s)" in timed_out.reason


def test_demand_rising_during_a_drain_undrains_instead_of_adding() -> None:
    # 2 pods kept, (15 + 1) / 5.6 = 2.9 pods wanted: b is taken back, nothing added.
    risen = [pod("a", 8), pod("b", 1, draining_since=300.0), pod("c", 6)]
    decision = decide(policy(), 3, risen, DRAINING_B, now=320.0)
    assert decision.direction == Direction.UP and decision.undrain == ("b",)
    assert decision.replicas == 3 and decision.state.draining == {}
    # More than the drained pod gives: undrain it and add the rest.
    surge = [pod("a", 8), pod("b", 1, draining_since=300.0), pod("c", 8), pod("d", 8)]
    more = decide(policy(), 4, surge, ScalerState(draining={"b": 300.0}), now=320.0)
    assert more.undrain == ("b",) and more.replicas == 5  # (25 + 1) / 5.6 = 4.6


def test_a_drain_the_pod_did_not_take_is_asked_again() -> None:
    not_taken = [pod("a", 3), PodSignal("b", True, scos(1), draining_since=None), pod("c", 2)]
    decision = decide(policy(), 3, not_taken, DRAINING_B, now=305.0)
    assert decision.drain == ("b",) and decision.direction == Direction.HOLD


def test_a_stray_drain_mark_is_undone_and_a_pod_that_left_is_forgotten() -> None:
    pods = [pod("a", 3), pod("b", 1, draining_since=100.0), pod("c", 2)]
    stray = decide(policy(), 3, pods, ScalerState(), now=305.0)
    assert stray.undrain == ("b",) and "without a record" in stray.reason
    left = decide(policy(), 3, [pod("a", 3), pod("c", 2), starting("d")], DRAINING_B, 305.0)
    assert left.state.draining == {} and left.replicas == 3
    assert "pod b left while draining" in left.reason


def test_above_max_drains_at_once_one_pod_per_decision() -> None:
    pods = [pod("a", 5), pod("b", 4), pod("c", 3), pod("d", 6)]
    first = decide(policy(max_replicas=2), 4, pods, ScalerState(), now=0.0)
    assert first.drain == ("c",) and first.replicas == 4
    marked = [pod("a", 5), pod("b", 4), pod("c", 3, draining_since=0.0), pod("d", 6)]
    second = decide(policy(max_replicas=2), 4, marked, first.state, now=5.0)
    assert second.drain == ("b",)


def test_disabled_holds_and_takes_drains_back() -> None:
    decision = decide(policy(enabled=False), 3, draining(1), DRAINING_B, now=305.0)
    assert decision.direction == Direction.HOLD and decision.replicas == 3
    assert decision.undrain == ("b",) and decision.state.draining == {}


# -- failed scrapes ----------------------------------------------------------------------------


def test_a_failed_scrape_holds_and_never_counts_as_zero() -> None:
    def pods(now: float) -> list[PodSignal]:
        return [pod("a", 3), pod("b", 1), unscraped("c")]

    decisions = run(pods, range(0, 1200, 5), replicas=3)
    assert {d.direction for d in decisions} == {Direction.HOLD}
    assert {d.replicas for d in decisions} == {3}
    assert "scrape failed for 1 of 3 pods (c)" in decisions[-1].reason
    assert decisions[-1].unscraped == ("c",) and decisions[-1].unscraped_since == 0.0
    nothing = decide(policy(), 3, [unscraped("a"), unscraped("b")], ScalerState(), 0.0)
    assert "scrape failed for 2 of 2 pods (a, b): holding" in nothing.reason


def test_a_failed_scrape_does_not_end_a_low_window_and_blocks_the_drain() -> None:
    def pods(now: float) -> list[PodSignal]:
        return [pod("a", 3), pod("b", 1), unscraped("c") if now == 300 else pod("c", 2)]

    decisions = run(pods, range(0, 310, 5), replicas=3)
    assert decisions[-2].direction == Direction.HOLD  # t=300: c unknown
    assert decisions[-1].drain == ("b",)  # t=305: the window held


def test_the_answering_pods_still_justify_a_scale_up() -> None:
    pods = [pod("a", 8), pod("b", 8), pod("c", 8), unscraped("d")]
    decision = decide(policy(), 4, pods, ScalerState(), now=0.0)
    assert decision.direction == Direction.UP and decision.replicas == 5  # ≥ 25 / 5.6 = 4.5
    assert "the others are a lower bound" in decision.reason


def test_a_draining_pod_that_does_not_answer_is_not_taken_for_empty() -> None:
    pods = [pod("a", 3), unscraped("b", draining_since=300.0), pod("c", 2)]
    decision = decide(policy(), 3, pods, DRAINING_B, now=400.0)
    assert decision.replicas == 3 and decision.drained == ()
    timed_out = decide(policy(), 3, pods, DRAINING_B, now=900.0)
    assert timed_out.replicas == 2 and "still has unknown sessions" in timed_out.reason


# -- the state ---------------------------------------------------------------------------------


def test_the_state_round_trips_through_json() -> None:
    state = ScalerState(
        low_since=1.5,
        low_peak=2,
        last_scale_up=0.0,
        pressure_since={"a": 3.0},
        draining={"b": 4.0},
        retired=("c",),
        scrape_failing_since={"d": 5.0},
    )
    assert ScalerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert ScalerState.from_dict({}) == ScalerState()
    assert ScalerState().to_dict() == {"version": 1}


@pytest.mark.parametrize(
    "stored",
    [{"version": 2}, {"draining": ["b"]}, {"lowSince": "soon"}, {"lowPeak": -1}, {"extra": 1}],
)
def test_a_state_that_is_not_one_is_refused(stored: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="scaler state"):
        ScalerState.from_dict(stored)


# -- a simulated runtime -----------------------------------------------------------------------


@dataclass
class FakePod:
    name: str
    ready_at: float
    active: int = 0
    marked: float | None = None  # the operator's drain mark


class FakeRuntime:
    """A runtime Deployment that does what the decisions say: pods start after `startup_s`,
    drain when told, and leave when their replicas are lowered."""

    def __init__(self, replicas: int, startup_s: float = 30.0) -> None:
        self.startup_s = startup_s
        self.pods: dict[str, FakePod] = {}
        self.created = 0
        self.replicas = 0
        self.state = ScalerState()
        self.rejected = 0
        self.scale(replicas, now=-startup_s)

    def scale(self, replicas: int, now: float) -> None:
        while len(self.pods) < replicas:
            self.created += 1
            name = f"runtime-{self.created:03d}"
            self.pods[name] = FakePod(name, ready_at=now + self.startup_s)
        assert len(self.pods) == replicas
        self.replicas = replicas

    def admitting(self, now: float) -> list[FakePod]:
        return [p for p in self.pods.values() if p.ready_at <= now and p.marked is None]

    def signals(self, now: float) -> list[PodSignal]:
        return [
            PodSignal(p.name, True, scos(p.active, draining=True), p.marked)
            if p.marked is not None
            else PodSignal(p.name, p.ready_at <= now, scos(p.active) if p.ready_at <= now else None)
            for p in self.pods.values()
        ]

    def step(self, scaling: ScalingPolicy, now: float) -> Decision:
        decision = decide(scaling, self.replicas, self.signals(now), self.state, now)
        for name in decision.drain:
            self.pods[name].marked = now
        for name in decision.undrain:
            self.pods[name].marked = None
        for name in decision.drained:
            del self.pods[name]
        self.scale(decision.replicas, now)
        self.state = decision.state
        return decision

    def sessions(self) -> int:
        return sum(p.active for p in self.pods.values())

    def churn(self, rng: random.Random, target: int, now: float, end_p: float) -> None:
        """Sessions end at random; new ones go to the least busy admitting pod, or are refused."""
        for p in self.pods.values():
            p.active -= sum(rng.random() < end_p for _ in range(p.active))
        for _ in range(max(target - self.sessions(), 0)):
            free = [p for p in self.admitting(now) if p.active < 8]
            if not free:
                self.rejected += 1
                continue
            min(free, key=lambda p: (p.active, p.name)).active += 1


def test_a_restart_mid_drain_carries_on_the_same() -> None:
    """Two runtimes see the same load; one operator restarts in the middle of a drain (its state
    only what a JSON annotation kept). They decide the same, to the end of the drain."""
    times = range(0, 1500, 5)
    runtimes = [FakeRuntime(replicas=4), FakeRuntime(replicas=4)]
    for runtime in runtimes:
        for p, active in zip(runtime.pods.values(), (3, 2, 1, 1), strict=True):
            p.active = active
    restarted = False
    for now in times:
        decisions = [r.step(policy(), now) for r in runtimes]
        a, b = decisions
        assert (a.replicas, a.direction, a.drain, a.drained, a.reason) == (
            b.replicas,
            b.direction,
            b.drain,
            b.drained,
            b.reason,
        )
        if runtimes[1].state.draining and not restarted:
            stored = json.dumps(runtimes[1].state.to_dict())
            runtimes[1].state = ScalerState.from_dict(json.loads(stored))
            restarted = True
        if now % 60 == 0:  # sessions end one by one, the drained pod's too
            for runtime in runtimes:
                busiest = max(runtime.pods.values(), key=lambda p: (p.active, p.name))
                if busiest.active:
                    busiest.active -= 1
                for p in runtime.pods.values():
                    if p.marked is not None and p.active:
                        p.active -= 1
    assert restarted
    assert runtimes[0].replicas == runtimes[1].replicas == 1


def load_at(now: float, rng: random.Random) -> int:
    """Sessions wanted over an hour: a ramp to 40, a noisy plateau, a fall, a one-minute spike,
    a quiet end."""
    if now < 600:
        return 2 + int(38 * now / 600)
    if now < 1800:
        return 40 + rng.randint(-4, 4)
    if now < 2400:
        return 40 - int(28 * (now - 1800) / 600)
    if 2700 <= now < 2760:
        return 24
    if now < 3000:
        return 12 + rng.randint(-2, 2)
    return 4 + rng.randint(-1, 1)


def direction_changes(decisions: Iterable[Decision]) -> int:
    moves = [d.direction for d in decisions if d.direction != Direction.HOLD]
    return sum(a != b for a, b in pairwise(moves))


def test_an_hour_of_load_does_not_flap() -> None:
    rng = random.Random(7)
    runtime = FakeRuntime(replicas=1)
    scaling = policy()
    decisions: list[tuple[float, Decision]] = []
    for now in range(0, 3600, 5):
        runtime.churn(rng, load_at(now, rng), now, end_p=5 / 180)
        decisions.append((now, runtime.step(scaling, now)))
        assert scaling.min_replicas <= runtime.replicas <= scaling.max_replicas
    plateau = [d for now, d in decisions if 700 <= now < 1800]
    # Up the ramp, down the fall, up for the spike (a drain taken back), down after it: three
    # changes of direction, and none on the noisy plateau (36 to 44 sessions, 8 or 9 pods' worth).
    assert direction_changes(d for _, d in decisions) == 3
    assert {(d.direction, d.replicas) for d in plateau} == {(Direction.HOLD, 9)}
    spike = [d for now, d in decisions if 2700 <= now < 2760]
    assert spike[0].direction == Direction.UP and spike[0].undrain
    # The hour ends with the last two surplus pods draining: 2 kept for 3 to 5 sessions.
    assert (runtime.replicas, len(runtime.state.draining)) == (4, 2)
    assert runtime.rejected == 0
