"""SCOS (`parley.scos/v1`): one schema for runtime and operator, exported into docs; the sliding
windows and the collector that fill it, with explicit clocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from parley.scos import BackpressureLevel, Scos, json_schema
from parley_runtime.signals import PodCounts, Policy, RuntimeMetrics, SignalCollector
from parley_runtime.signals.window import CountWindow, RateWindow, SampleWindow
from parley_runtime.telemetry import TurnMetrics, TurnOutcome

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_schema_is_the_model() -> None:
    exported = json.loads((ROOT / "docs" / "scos.schema.json").read_text())
    assert exported == json_schema(), "run: .venv/bin/parley scos schema > docs/scos.schema.json"


def test_the_cli_prints_the_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "parley", "scos", "schema"], capture_output=True, check=True
    ).stdout
    assert json.loads(out) == json_schema()


def test_the_operator_side_imports_it_without_media_or_model_packages() -> None:
    probe = (
        "import sys, parley.scos; "
        "heavy = {'numpy', 'av', 'aiortc', 'faster_whisper', 'onnxruntime', 'piper', 'fastapi'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True, text=True)
    assert out.stdout.strip() == "[]"


def test_unknown_fields_and_schema_versions_are_refused() -> None:
    good = json.loads(collector_at(0.0)[0].summary(pod()).to_json())
    assert Scos.model_validate(good).schema_ == "parley.scos/v1"
    with pytest.raises(ValueError, match="schema"):
        Scos.model_validate({**good, "schema": "parley.scos/v2"})
    with pytest.raises(ValueError, match="transcript"):
        Scos.model_validate({**good, "transcript": "hello"})


def test_sample_window_forgets_old_samples() -> None:
    window = SampleWindow(window_s=60)
    for t in range(100):
        window.add(float(t), now=float(t))
    p = window.percentiles(now=99.0)
    assert p.samples == 61 and p.p50_ms == 69.0 and p.p95_ms == 96.0
    assert window.percentiles(now=500.0).samples == 0
    assert window.percentiles(now=500.0).p95_ms is None


def test_count_and_rate_windows() -> None:
    counts = CountWindow(window_s=10)
    counts.add("completed", 0.0)
    counts.add("failed", 5.0)
    counts.add("completed", 12.0)
    assert counts.counts(12.0) == {"failed": 1, "completed": 1}
    rate = RateWindow(window_s=10)
    for t, (sent, late) in enumerate([(0, 0), (50, 0), (100, 5), (150, 5)]):
        rate.record(sent, late, float(t))
    assert rate.delta() == (150, 5) and rate.ratio() == pytest.approx(5 / 150)
    for t in range(4, 30):
        rate.record(150 + 50 * (t - 3), 5, float(t))
    total, late = rate.delta()
    assert late == 0 and total == 500  # only the last 10 s


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pod(active: int = 2, capacity: int = 8, **kw: object) -> PodCounts:
    fields: dict[str, object] = {
        "active": active,
        "capacity": capacity,
        "admitted_total": 5,
        "rejected_total": 1,
        "cut_total": 0,
        "frames_sent_total": 0,
        "frames_late_total": 0,
        "draining": False,
        "ready": True,
    }
    fields.update(kw)
    return PodCounts(**fields)  # type: ignore[arg-type]


def collector_at(now: float, policy: Policy | None = None) -> tuple[SignalCollector, Clock]:
    clock = Clock(now)
    metrics = RuntimeMetrics(CollectorRegistry())
    collector = SignalCollector(policy or Policy(), metrics, 60.0, clock=clock, wall_clock=clock)
    return collector, clock


def test_warm_up_and_steady_turns_are_kept_apart() -> None:
    collector, clock = collector_at(1000.0)
    for turn, ttfa in enumerate([400.0, 300.0, 200.0, 100.0, 110.0, 120.0], start=1):
        collector.on_turn(TurnMetrics(turn=turn, ttfa_ms=ttfa, steady=turn > 3))
        collector.on_turn_end(TurnOutcome.COMPLETED, turn > 3)
    collector.on_barge_in(True, 90.0, True)
    collector.on_barge_in(False, None, True)
    collector.on_client_report(850.0, None, True)
    collector.on_client_report(-5.0, 10**9, True)  # nonsense is ignored
    summary = collector.summary(pod())
    steady, warm_up = summary.latency.steady, summary.latency.warm_up
    assert (steady.ttfa.samples, steady.ttfa.p50_ms) == (3, 110.0)
    assert (warm_up.ttfa.samples, warm_up.ttfa.p50_ms) == (3, 300.0)
    assert steady.barge_in.samples == 1 and steady.v2v.p50_ms == 850.0
    assert warm_up.v2v.samples == 0
    assert summary.turns.completed == 6
    clock.now += 61
    assert collector.summary(pod()).latency.steady.ttfa.samples == 0


def test_evaluation_moves_the_level_and_the_summary_says_why() -> None:
    collector, clock = collector_at(1000.0, Policy(hold_s=5))
    assert collector.evaluate(pod(active=6)).level is BackpressureLevel.BRIEF
    summary = collector.summary(pod(active=6))
    assert summary.backpressure.name == "BRIEF"
    assert summary.backpressure.reasons == ["sessions 6/8 >= 75% of capacity"]
    assert summary.backpressure.since == 1000.0 and summary.backpressure.changes_total == 1
    assert summary.sessions.admission_cap == 8
    for _ in range(20):
        clock.now += 1
        collector.evaluate(pod(active=0))
    assert collector.level is BackpressureLevel.NORMAL
    assert collector.summary(pod(active=0)).backpressure.changes_total == 3


def test_late_frames_are_a_ratio_over_the_window() -> None:
    collector, clock = collector_at(1000.0)
    for second in range(10):
        clock.now = 1000.0 + second
        collector.evaluate(pod(frames_sent_total=500 * second, frames_late_total=50 * second))
    media = collector.summary(pod()).media
    assert media.frames_sent == 4500 and media.late_frame_ratio == pytest.approx(0.1)
    assert collector.level is BackpressureLevel.SESSION_REJECT


def test_a_draining_pod_admits_nothing() -> None:
    collector, _ = collector_at(1000.0)
    summary = collector.summary(pod(draining=True, ready=False))
    assert summary.draining and not summary.ready and summary.sessions.admission_cap == 0
