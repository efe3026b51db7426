"""The pod's load signals: latency windows, event-loop lag, late frames → backpressure level
and the SCOS summary.

`SignalCollector` is a conversation observer (it sees turns, barge-ins and client reports)
and runs one small loop: it samples event-loop lag ten times a second and, about once a
second, measures the pod (`PodCounts`, from the session manager), steps the backpressure
state (`backpressure.step`, pure) and logs and counts each level change. Everything it keeps
is aggregate: numbers and reasons, never text from a conversation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from parley.scos import (
    Backpressure,
    BackpressureLevel,
    Latency,
    LatencySet,
    Media,
    Scos,
    Sessions,
    Turns,
)
from parley_runtime.signals.backpressure import (
    BackpressureState,
    Load,
    Policy,
    admission_cap,
    step,
)
from parley_runtime.signals.metrics import RuntimeMetrics
from parley_runtime.signals.window import CountWindow, RateWindow, SampleWindow
from parley_runtime.telemetry import ConversationObserver, TurnMetrics, TurnOutcome

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 0.1
EVALUATE_EVERY_S = 1.0
#: Client-reported latencies outside this range are ignored as nonsense.
_CLIENT_REPORT_MAX_MS = 60_000.0


@dataclass(frozen=True)
class PodCounts:
    """What the session manager knows, at one instant."""

    active: int
    capacity: int
    admitted_total: int
    rejected_total: int
    cut_total: int
    frames_sent_total: int
    frames_late_total: int
    draining: bool
    ready: bool


class _LatencyWindows:
    def __init__(self, window_s: float) -> None:
        self.ttfa = SampleWindow(window_s)
        self.v2v = SampleWindow(window_s)
        self.barge_in = SampleWindow(window_s)

    def summary(self, now: float) -> LatencySet:
        return LatencySet(
            ttfa=self.ttfa.percentiles(now),
            v2v=self.v2v.percentiles(now),
            barge_in=self.barge_in.percentiles(now),
        )


class SignalCollector(ConversationObserver):
    def __init__(
        self,
        policy: Policy,
        metrics: RuntimeMetrics,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.window_s = window_s
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()
        self._steady = _LatencyWindows(window_s)
        self._warm_up = _LatencyWindows(window_s)
        self._outcomes = CountWindow(window_s)
        self._lag = SampleWindow(window_s)
        self._frames = RateWindow(window_s)
        self._frames_seen = (0, 0)
        self.state = BackpressureState(since=wall_clock())
        self.changes = 0

    @property
    def level(self) -> BackpressureLevel:
        return self.state.level

    # -- observer -------------------------------------------------------------------------

    def _windows(self, steady: bool) -> _LatencyWindows:
        return self._steady if steady else self._warm_up

    def on_turn(self, metrics: TurnMetrics) -> None:
        if metrics.ttfa_ms is not None:
            self._windows(metrics.steady).ttfa.add(metrics.ttfa_ms, self._clock())

    def on_turn_end(self, outcome: TurnOutcome, steady: bool) -> None:
        self._outcomes.add(outcome.value, self._clock())

    def on_barge_in(self, confirmed: bool, latency_ms: float | None, steady: bool) -> None:
        if confirmed and latency_ms is not None:
            self._windows(steady).barge_in.add(latency_ms, self._clock())

    def on_client_report(
        self, v2v_ms: float | None, barge_in_ms: float | None, steady: bool
    ) -> None:
        windows, now = self._windows(steady), self._clock()
        if v2v_ms is not None and 0 <= v2v_ms <= _CLIENT_REPORT_MAX_MS:
            windows.v2v.add(v2v_ms, now)
        if barge_in_ms is not None and 0 <= barge_in_ms <= _CLIENT_REPORT_MAX_MS:
            windows.barge_in.add(barge_in_ms, now)

    # -- measuring ------------------------------------------------------------------------

    def load(self, pod: PodCounts) -> Load:
        now = self._clock()
        frames, late = self._frames.delta()
        ttfa = self._steady.ttfa.percentiles(now)
        outcomes = self._outcomes.counts(now)
        turns = sum(outcomes.values())
        return Load(
            active=pod.active,
            capacity=pod.capacity,
            loop_lag_p95_ms=self._lag_p95(now),
            frames_sent=frames,
            late_frame_ratio=late / frames if frames else 0.0,
            ttfa_p95_ms=ttfa.p95_ms,
            ttfa_samples=ttfa.samples,
            turns=turns,
            failed_turns=outcomes.get(TurnOutcome.FAILED.value, 0),
        )

    def evaluate(self, pod: PodCounts) -> BackpressureState:
        """Measure the pod and step the backpressure state (about once a second)."""
        self._frames.record(pod.frames_sent_total, pod.frames_late_total, self._clock())
        self._count_frames(pod)
        load = self.load(pod)
        before = self.state
        self.state = step(before, load, self.policy, self._wall_clock())
        if self.state.level != before.level:
            self.changes += 1
            self._metrics.backpressure_changes.labels(self.state.name).inc()
            log.warning(
                "backpressure %s -> %s: %s",
                before.name,
                self.state.name,
                "; ".join(self.state.reasons) or "all triggers clear",
            )
        self._metrics.backpressure_level.set(int(self.state.level))
        self._metrics.event_loop_lag.set(load.loop_lag_p95_ms / 1000)
        return self.state

    def _count_frames(self, pod: PodCounts) -> None:
        sent, late = self._frames_seen
        self._metrics.frames_sent.inc(max(0, pod.frames_sent_total - sent))
        self._metrics.frames_late.inc(max(0, pod.frames_late_total - late))
        self._frames_seen = (pod.frames_sent_total, pod.frames_late_total)

    def _lag_p95(self, now: float) -> float:
        lag = self._lag.percentiles(now)
        return lag.p95_ms or 0.0

    def admission_cap(self, capacity: int) -> int:
        return admission_cap(self.level, capacity, self.policy)

    async def run(self, measure: Callable[[], PodCounts]) -> None:
        """Sample event-loop lag and evaluate about once a second, until cancelled."""
        loop = asyncio.get_running_loop()
        last_evaluation = loop.time()
        while True:
            expected = loop.time() + LAG_INTERVAL_S
            await asyncio.sleep(LAG_INTERVAL_S)
            self._lag.add(max(0.0, loop.time() - expected) * 1000, self._clock())
            if loop.time() - last_evaluation >= EVALUATE_EVERY_S:
                last_evaluation = loop.time()
                try:
                    self.evaluate(measure())
                except Exception:  # the signals must never take the pod down
                    log.exception("signal evaluation failed")

    # -- SCOS -----------------------------------------------------------------------------

    def summary(self, pod: PodCounts) -> Scos:
        now = self._clock()
        outcomes = self._outcomes.counts(now)
        frames, late = self._frames.delta()
        return Scos(
            generated_at=round(self._wall_clock(), 3),
            uptime_s=round(now - self._started, 1),
            ready=pod.ready,
            draining=pod.draining,
            sessions=Sessions(
                active=pod.active,
                capacity=pod.capacity,
                admission_cap=0 if pod.draining else self.admission_cap(pod.capacity),
                admitted_total=pod.admitted_total,
                rejected_total=pod.rejected_total,
                cut_total=pod.cut_total,
            ),
            backpressure=Backpressure(
                level=self.state.level,
                name=self.state.name,
                since=round(self.state.since, 3),
                reasons=list(self.state.reasons),
                changes_total=self.changes,
            ),
            latency=Latency(
                window_s=self.window_s,
                steady=self._steady.summary(now),
                warm_up=self._warm_up.summary(now),
            ),
            turns=Turns(
                completed=outcomes.get(TurnOutcome.COMPLETED.value, 0),
                interrupted=outcomes.get(TurnOutcome.INTERRUPTED.value, 0),
                reset_no_audio=outcomes.get(TurnOutcome.RESET_NO_AUDIO.value, 0),
                failed=outcomes.get(TurnOutcome.FAILED.value, 0),
            ),
            media=Media(
                event_loop_lag_p95_ms=self._lag_p95(now),
                frames_sent=frames,
                late_frame_ratio=round(late / frames, 4) if frames else 0.0,
            ),
        )
