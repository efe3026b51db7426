"""The runtime's autoscaling decision: every pod's SCOS in, replicas and drain actions out. Pure.

No I/O and no clock (`now` is an argument): the adapter scrapes `GET /v1/scos` every
`intervalSeconds`, calls `decide`, then drains, undrains, sets pod-deletion-cost and patches the
runtime's replicas as the `Decision` says, and stores `Decision.state` for the next call.

Why the rules are what they are:

- Sizing is by sessions: `ceil((Σ active + bufferSessions) / (sessionsPerPod × target))`, within
  `replicas.min`/`max`, and a tolerance band around it so that a load hovering at a boundary
  changes nothing.
- A pod at ADMISSION_LIMITED or above is already refusing sessions; held for longer than
  `backpressureWindowSeconds` it asks for one more pod even when the session count does not.
  How long it has been held is what the pod itself reports (`backpressure.since`), or since
  the operator first saw it, whichever is longer: the scrape interval does not add a window
  of its own on top of the pod's.
- Growing is cheap to undo and slow to take effect (a new pod loads its models), so it happens
  at once, by as many pods as needed, at most once per `scaleUpStabilizationSeconds`.
- Shrinking costs conversations when done wrong, so it waits until demand stayed below the
  current size for `scaleDownStabilizationSeconds`, drains one pod (the emptiest) per decision,
  and lowers the replicas only by the drained pods that are empty or past `drainTimeoutSeconds`.
  Demand that rises again during a drain undrains a pod instead of adding one.
- A failed scrape is not an empty pod: it never starts a drain, never completes one, and never
  counts as zero sessions. The pods that did answer still justify a scale-up (their sessions
  are a lower bound of the demand).

`ScalerState` is what one decision leaves to the next, as plain data (`to_dict`/`from_dict`), so
that an operator restart in the middle of a drain carries on where it was. The adapter stores it
only once the decision's actions are done, and best in the same patch as the replicas (the two
must never disagree: a completed drain lowers the replicas once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any

from parley.scos import BackpressureLevel, Scos
from parley_operator.api import VoiceDeploymentSpec

#: The level from which a pod refuses sessions it has room for.
PRESSURE_LEVEL = BackpressureLevel.ADMISSION_LIMITED

STATE_VERSION = 1


# -- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingPolicy:
    """What the decision needs from the spec, in seconds and percent."""

    enabled: bool
    min_replicas: int
    max_replicas: int
    sessions_per_pod: int
    target_utilization_pct: int
    buffer_sessions: int
    tolerance_pct: int
    backpressure_window_s: float
    scale_up_stabilization_s: float
    scale_down_stabilization_s: float
    drain_timeout_s: float
    interval_s: float  # the adapter's loop, not the decision's
    scrape_timeout_s: float  # the adapter's loop, not the decision's

    @classmethod
    def from_spec(cls, spec: VoiceDeploymentSpec) -> ScalingPolicy:
        scaling, runtime = spec.scaling, spec.runtime
        return cls(
            enabled=scaling.enabled,
            min_replicas=runtime.replicas.min,
            max_replicas=runtime.replicas.max,
            sessions_per_pod=runtime.sessions_per_pod,
            target_utilization_pct=scaling.target_utilization,
            buffer_sessions=scaling.buffer_sessions,
            tolerance_pct=scaling.tolerance,
            backpressure_window_s=scaling.backpressure_window_seconds,
            scale_up_stabilization_s=scaling.scale_up_stabilization_seconds,
            scale_down_stabilization_s=scaling.scale_down_stabilization_seconds,
            drain_timeout_s=scaling.drain_timeout_seconds,
            interval_s=scaling.interval_seconds,
            scrape_timeout_s=scaling.scrape_timeout_seconds,
        )

    def bounded(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class PodSignal:
    """One runtime pod as the adapter saw it this round."""

    name: str
    ready: bool  # the pod's Ready condition
    scos: Scos | None  # None: not scraped, or the scrape failed
    draining_since: float | None = None  # the operator's drain mark on the pod, if any


@dataclass(frozen=True)
class ScalerState:
    """What one decision leaves to the next. Plain data; times are the `now`s given to `decide`."""

    low_since: float | None = None  # demand has stayed below the current size since then
    low_peak: int = 0  # the most pods demand asked for since `low_since`
    last_scale_up: float | None = None
    pressure_since: Mapping[str, float] = field(default_factory=dict)  # pod → first seen ≥ 3
    draining: Mapping[str, float] = field(default_factory=dict)  # pod → drain started
    retired: tuple[str, ...] = ()  # drained, replicas lowered: waiting to be deleted
    scrape_failing_since: Mapping[str, float] = field(default_factory=dict)  # pod → first fail

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-able dict (empty fields left out), e.g. for an annotation."""
        out: dict[str, Any] = {"version": STATE_VERSION}
        if self.low_since is not None:
            out["lowSince"] = self.low_since
            out["lowPeak"] = self.low_peak
        if self.last_scale_up is not None:
            out["lastScaleUp"] = self.last_scale_up
        for key, times in (
            ("pressureSince", self.pressure_since),
            ("draining", self.draining),
            ("scrapeFailingSince", self.scrape_failing_since),
        ):
            if times:
                out[key] = dict(sorted(times.items()))
        if self.retired:
            out["retired"] = sorted(self.retired)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScalerState:
        """The state `to_dict` wrote; `ValueError` for anything else (the adapter then starts
        from `ScalerState()`, which holds the size and drains nothing)."""
        if data.get("version", STATE_VERSION) != STATE_VERSION:
            raise ValueError(f"unknown scaler state version {data.get('version')!r}")
        unknown = set(data) - {
            "version",
            "lowSince",
            "lowPeak",
            "lastScaleUp",
            "pressureSince",
            "draining",
            "retired",
            "scrapeFailingSince",
        }
        if unknown:
            raise ValueError(f"unknown scaler state fields {sorted(unknown)}")
        low_since = _optional_time(data, "lowSince")
        peak = data.get("lowPeak", 0)
        if not isinstance(peak, int) or isinstance(peak, bool) or peak < 0:
            raise ValueError(f"scaler state lowPeak must be a count, not {peak!r}")
        retired = data.get("retired", [])
        if not isinstance(retired, list) or not all(isinstance(n, str) for n in retired):
            raise ValueError(f"scaler state retired must be pod names, not {retired!r}")
        return cls(
            low_since=low_since,
            low_peak=peak if low_since is not None else 0,
            last_scale_up=_optional_time(data, "lastScaleUp"),
            pressure_since=_times(data, "pressureSince"),
            draining=_times(data, "draining"),
            retired=tuple(sorted(retired)),
            scrape_failing_since=_times(data, "scrapeFailingSince"),
        )


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional_time(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not _is_time(value):
        raise ValueError(f"scaler state {key} must be a time, not {value!r}")
    return float(value)


def _times(data: Mapping[str, Any], key: str) -> dict[str, float]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(name, str) and _is_time(t) for name, t in value.items()
    ):
        raise ValueError(f"scaler state {key} must map pod names to times, not {value!r}")
    return {name: float(t) for name, t in value.items()}


# -- outputs -----------------------------------------------------------------------------------


class Direction(StrEnum):
    UP = "up"  # replicas added, or a draining pod taken back
    DOWN = "down"  # a drain started, or replicas lowered by the drained pods
    HOLD = "hold"


@dataclass(frozen=True)
class Demand:
    """Sessions, and the pods they call for at the target utilization."""

    sessions: int  # active sessions on the pods that answered
    buffer: int
    pods: Fraction  # (sessions + buffer) / (sessions per pod × target)
    replicas: int  # ceil(pods) within min..max

    def describe(self, policy: ScalingPolicy) -> str:
        bound = ""
        if _ceil(self.pods) > self.replicas:
            bound = f" (max {policy.max_replicas})"
        elif _ceil(self.pods) < self.replicas:
            bound = f" (min {policy.min_replicas})"
        return (
            f"demand ({self.sessions} active + {self.buffer} buffer) / "
            f"({policy.sessions_per_pod} × {policy.target_utilization_pct} %) = "
            f"{float(self.pods):.1f} → {self.replicas} pods{bound}"
        )


@dataclass(frozen=True)
class Decision:
    """What the adapter does this round, and the state it stores for the next."""

    replicas: int  # the runtime Deployment's replicas from now on
    direction: Direction
    reason: str
    drain: tuple[str, ...]  # POST /v1/drain and mark them (new drains, and retries)
    undrain: tuple[str, ...]  # DELETE /v1/drain and unmark them
    drained: tuple[str, ...]  # empty or timed out: lowest pod-deletion-cost; `replicas` < before
    unscraped: tuple[str, ...]  # pods whose SCOS was expected and is missing
    demand: Demand
    state: ScalerState

    @property
    def unscraped_since(self) -> float | None:
        """Since when a scrape has been failing without a break (for a persistent condition)."""
        return min(self.state.scrape_failing_since.values(), default=None)


# -- the decision ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pods:
    """The pods, grouped by what the decision may do with them."""

    signals: dict[str, PodSignal]
    draining: dict[str, float]  # ours, still there
    vanished: tuple[str, ...]  # were draining, gone
    retired: tuple[str, ...]
    kept: tuple[str, ...]  # were retired, but the ReplicaSet kept them: undone
    strays: tuple[str, ...]  # marked draining without a record in the state: undone
    unscraped: tuple[str, ...]
    starting: tuple[str, ...]  # not ready yet: capacity on its way

    @classmethod
    def classify(cls, pods: Iterable[PodSignal], state: ScalerState, replicas: int) -> _Pods:
        signals = {pod.name: pod for pod in pods}
        retired = tuple(sorted(n for n in state.retired if n in signals))
        # A retired pod is one the ReplicaSet is about to delete. Still there when the pods are
        # no more than the replicas, it was kept (another pod went first, or the replicas rose
        # again before it went): it is one of the runtime's pods again.
        kept = retired if len(signals) <= replicas else ()
        retired = tuple(n for n in retired if n not in kept)
        draining = {n: t for n, t in state.draining.items() if n in signals}
        strays = tuple(
            sorted(
                n
                for n, pod in signals.items()
                if pod.draining_since is not None and n not in draining and n not in retired
            )
        )
        unscraped = tuple(
            sorted(
                n
                for n, pod in signals.items()
                if pod.scos is None and (pod.ready or n in draining) and n not in retired
            )
        )
        starting = tuple(
            sorted(
                n
                for n, pod in signals.items()
                if not pod.ready
                and n not in draining
                and n not in retired
                and n not in strays
                and (pod.scos is None or not pod.scos.draining)
            )
        )
        return cls(
            signals=signals,
            draining=draining,
            vanished=tuple(sorted(n for n in state.draining if n not in signals)),
            retired=retired,
            kept=kept,
            strays=tuple(n for n in strays if n not in kept),
            unscraped=unscraped,
            starting=starting,
        )

    def active(self, name: str) -> int | None:
        scos = self.signals[name].scos
        return None if scos is None else scos.sessions.active

    def counted(self) -> list[Scos]:
        """The summaries whose sessions count toward demand: every pod's but the retired."""
        return [
            pod.scos
            for name, pod in self.signals.items()
            if pod.scos is not None and name not in self.retired
        ]

    def admitting(self) -> list[PodSignal]:
        """Ready pods that admit sessions and answered: the ones that may be drained, or whose
        backpressure asks for more."""
        return [
            pod
            for name, pod in self.signals.items()
            if pod.ready
            and pod.scos is not None
            and not pod.scos.draining
            and name not in self.draining
            and name not in self.retired
            and name not in self.strays
        ]


def demand_of(policy: ScalingPolicy, sessions: int) -> Demand:
    per_pod = Fraction(policy.sessions_per_pod * policy.target_utilization_pct, 100)
    pods = (sessions + policy.buffer_sessions) / per_pod
    return Demand(
        sessions=sessions,
        buffer=policy.buffer_sessions,
        pods=pods,
        replicas=policy.bounded(_ceil(pods)),
    )


def _ceil(value: Fraction) -> int:
    return -(-value.numerator // value.denominator)


def _above_band(policy: ScalingPolicy, demand: Demand, size: int) -> bool:
    return demand.replicas > size and demand.pods > size * Fraction(100 + policy.tolerance_pct, 100)


def _below_band(policy: ScalingPolicy, demand: Demand, size: int) -> bool:
    return demand.replicas < size and demand.pods < size * Fraction(100 - policy.tolerance_pct, 100)


def _pressure_since(pods: _Pods, state: ScalerState, now: float) -> dict[str, float]:
    """Since when each pod is at PRESSURE_LEVEL or above, without a break. An unanswered
    scrape keeps the pod's record (unknown is not recovered); a pod seen below it loses it."""
    since: dict[str, float] = {}
    for pod in pods.admitting():
        assert pod.scos is not None
        pressure = pod.scos.backpressure
        if pressure.level >= PRESSURE_LEVEL:
            # The pod's own duration (its clock, so no skew), placed on the operator's clock.
            reported = now - max(0.0, pod.scos.generated_at - pressure.since)
            since[pod.name] = min(state.pressure_since.get(pod.name, now), reported)
    for name in pods.unscraped:
        if name in state.pressure_since and name not in pods.draining:
            since[name] = state.pressure_since[name]
    return since


def _sustained_pressure(
    policy: ScalingPolicy, pods: _Pods, pressure_since: Mapping[str, float], now: float
) -> list[str]:
    """'pod x at SESSION_REJECT for 12 s' for each answering pod over the window."""
    found = []
    for pod in pods.admitting():
        since = pressure_since.get(pod.name)
        if since is not None and now - since >= policy.backpressure_window_s:
            assert pod.scos is not None
            level = pod.scos.backpressure.level.name
            found.append(f"pod {pod.name} at {level} for {now - since:.0f} s")
    return found


def _undrain_order(pods: _Pods) -> list[str]:
    """Taken back first: the drains furthest from done (unknown, then the most sessions)."""

    def key(name: str) -> tuple[int, str]:
        active = pods.active(name)
        return (-(active if active is not None else 1 << 30), name)

    return sorted(pods.draining, key=key)


def _drain_candidate(pods: _Pods) -> PodSignal | None:
    """The ready, answering, admitting pod with the fewest sessions (ties: by name)."""

    def key(pod: PodSignal) -> tuple[int, str]:
        assert pod.scos is not None
        return (pod.scos.sessions.active, pod.name)

    return min(pods.admitting(), key=key, default=None)


def decide(
    policy: ScalingPolicy,
    replicas: int,
    pods: Sequence[PodSignal],
    state: ScalerState,
    now: float,
) -> Decision:
    """The runtime's replicas and drain actions for this round. `pods` are all the runtime's
    pods that are not terminating, `replicas` the Deployment's current `spec.replicas`."""
    classified = _Pods.classify(pods, state, replicas)
    demand = demand_of(policy, sum(scos.sessions.active for scos in classified.counted()))
    pressure_since = _pressure_since(classified, state, now)
    failing_since = {n: state.scrape_failing_since.get(n, now) for n in classified.unscraped}
    notes = [demand.describe(policy)]
    if classified.unscraped:
        answered = sum(pod.scos is not None for pod in classified.signals.values())
        notes.append(
            f"scrape failed for {len(classified.unscraped)} of {len(classified.signals)} "
            f"pods ({', '.join(classified.unscraped)}): "
            + ("holding" if answered == 0 else "no scale-down, the others are a lower bound")
        )
    notes += [f"pod {n} left while draining" for n in classified.vanished]
    notes += [f"pod {n} was kept by the ReplicaSet: undraining" for n in classified.kept]
    notes += [f"pod {n} marked draining without a record: undraining" for n in classified.strays]

    round_ = _Round(
        policy=policy,
        replicas=replicas,
        pods=classified,
        now=now,
        demand=demand,
        notes=notes,
        base=ScalerState(
            low_since=state.low_since,
            low_peak=state.low_peak,
            last_scale_up=state.last_scale_up,
            pressure_since=pressure_since,
            draining=classified.draining,
            retired=classified.retired,
            scrape_failing_since=failing_since,
        ),
    )
    if not policy.enabled:
        return round_.disabled()
    target, why = round_.wanted()
    notes += why
    if target > round_.committed:
        return round_.scale_up(target)
    return round_.hold_or_scale_down(asked_for_more=bool(why))


@dataclass
class _Round:
    """One call of `decide`: its inputs, the parts of the state already brought up to date
    (backpressure, scrape failures, pods that left), and the reasons gathered on the way."""

    policy: ScalingPolicy
    replicas: int
    pods: _Pods
    now: float
    demand: Demand
    notes: list[str]
    base: ScalerState

    @property
    def committed(self) -> int:
        """The pods the runtime keeps: the replicas less the ones being drained."""
        return max(self.replicas - len(self.pods.draining), 0)

    def decision(
        self,
        direction: Direction,
        *,
        replicas: int | None = None,
        drain: Iterable[str] = (),
        undrain: Iterable[str] = (),
        drained: Iterable[str] = (),
        **state: Any,
    ) -> Decision:
        fields: dict[str, Any] = {
            "low_since": self.base.low_since,
            "low_peak": self.base.low_peak,
            "last_scale_up": self.base.last_scale_up,
            "pressure_since": self.base.pressure_since,
            "draining": self.base.draining,
            "retired": self.base.retired,
            "scrape_failing_since": self.base.scrape_failing_since,
        } | state
        if fields["low_since"] is None:
            fields["low_peak"] = 0
        return Decision(
            replicas=self.replicas if replicas is None else replicas,
            direction=direction,
            reason="; ".join(self.notes),
            drain=tuple(sorted(drain)),
            undrain=tuple(sorted({*undrain, *self.pods.strays, *self.pods.kept})),
            drained=tuple(sorted(drained)),
            unscraped=self.pods.unscraped,
            demand=self.demand,
            state=ScalerState(**fields),
        )

    def disabled(self) -> Decision:
        self.notes.append("autoscaling disabled: holding, and taking back any drain")
        return self.decision(
            Direction.HOLD,
            undrain=self.pods.draining,
            draining={},
            low_since=None,
            pressure_since={},
        )

    def wanted(self) -> tuple[int, list[str]]:
        """The pods that demand, backpressure and `min` ask for (never more than `max`), and
        why; the committed size, and no reason, when nothing asks for more."""
        policy, committed = self.policy, self.committed
        target, why = committed, []
        if committed < policy.min_replicas:
            target = policy.min_replicas
            why.append(f"below min {policy.min_replicas}")
        if _above_band(policy, self.demand, committed):
            target = max(target, self.demand.replicas)
            why.append(f"above {committed} pods + {policy.tolerance_pct} %")
        pressure = _sustained_pressure(policy, self.pods, self.base.pressure_since, self.now)
        if pressure and self.pods.starting:
            self.notes += pressure
            self.notes.append(f"waiting for {len(self.pods.starting)} starting pod(s)")
        elif pressure:
            target = max(target, committed + 1)
            why += pressure
        if target > policy.max_replicas:
            target = policy.max_replicas
            why.append(f"at max {policy.max_replicas}")
        return target, why

    def scale_up(self, target: int) -> Decision:
        """Grow to `target`, taking back draining pods before adding any."""
        committed, last_up = self.committed, self.base.last_scale_up
        taken_back = _undrain_order(self.pods)[: target - committed]
        to_add = target - committed - len(taken_back)
        if (
            to_add
            and committed >= self.policy.min_replicas
            and last_up is not None
            and self.now - last_up < self.policy.scale_up_stabilization_s
        ):
            self.notes.append(
                f"scale-up stabilization: last scale-up {self.now - last_up:.0f} s ago "
                f"(< {self.policy.scale_up_stabilization_s:.0f} s)"
            )
            to_add = 0
        if taken_back:
            self.notes.append(f"undraining {', '.join(sorted(taken_back))}")
        if to_add:
            self.notes.append(f"{self.replicas} → {self.replicas + to_add} replicas")
        return self.decision(
            Direction.UP if taken_back or to_add else Direction.HOLD,
            replicas=self.replicas + to_add,
            undrain=taken_back,
            draining={n: t for n, t in self.pods.draining.items() if n not in taken_back},
            low_since=None,
            last_scale_up=self.now if to_add else last_up,
        )

    def hold_or_scale_down(self, *, asked_for_more: bool) -> Decision:
        """Finish the drains that are done, then start one more when demand has stayed low for
        the whole window (at once above `max`), the emptiest ready pod first. `asked_for_more`:
        something asked to grow past `max`, so demand is not low either."""
        policy, pods, now = self.policy, self.pods, self.now
        finished, retry = [], []
        for name, since in sorted(pods.draining.items()):
            pod, active = pods.signals[name], pods.active(name)
            if active == 0:
                finished.append(name)
                self.notes.append(f"pod {name} drained")
            elif now - since >= policy.drain_timeout_s:
                finished.append(name)
                self.notes.append(
                    f"pod {name} still has "
                    + ("unknown" if active is None else str(active))
                    + f" sessions after the drain timeout ({policy.drain_timeout_s:.0f} s)"
                )
            elif pod.draining_since is None or (pod.scos is not None and not pod.scos.draining):
                retry.append(name)
        draining = {n: t for n, t in pods.draining.items() if n not in finished}
        replicas = self.replicas - len(finished)
        retired = tuple(sorted({*pods.retired, *finished}))
        if finished:
            self.notes.append(f"{self.replicas} → {replicas} replicas")

        committed = self.committed  # drains that finished were not counted in it anyway
        above_max = committed > policy.max_replicas
        low = above_max or (
            not asked_for_more
            and _below_band(policy, self.demand, committed)
            and not self.base.pressure_since
        )
        low_since, low_peak = self.base.low_since, self.base.low_peak
        if not low:
            low_since = None
        elif not pods.unscraped:  # a failed scrape neither starts nor extends the window
            if low_since is None or low_peak >= committed:
                low_since, low_peak = now, 0
            low_peak = max(low_peak, self.demand.replicas)

        drain: list[str] = []
        waited = 0.0 if low_since is None else now - low_since
        if (
            low
            and not pods.unscraped
            and (above_max or waited >= policy.scale_down_stabilization_s)
        ):
            candidate = _drain_candidate(pods)
            if candidate is None:
                self.notes.append("no ready pod to drain")
            else:
                drain.append(candidate.name)
                draining[candidate.name] = now
                self.notes.append(
                    f"{'above max' if above_max else f'low for {waited:.0f} s'}: draining "
                    f"{candidate.name} ({pods.active(candidate.name)} sessions)"
                )
                if low_peak >= committed - 1:  # demand has not been below the new size as long
                    low_since = None
        elif low and low_since is not None and not above_max:
            self.notes.append(
                f"low for {waited:.0f} s of {policy.scale_down_stabilization_s:.0f} s"
            )

        return self.decision(
            Direction.DOWN if drain or finished else Direction.HOLD,
            replicas=replicas,
            drain=[*drain, *retry],
            drained=finished,
            draining=draining,
            retired=retired,
            low_since=low_since,
            low_peak=low_peak,
        )
