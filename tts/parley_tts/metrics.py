"""The TTS server's Prometheus metrics (one registry per app)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0)


class _ManagerCollector(Collector):
    """Model-manager counts, read at scrape time from the manager itself."""

    def __init__(self) -> None:
        self.manager: Any = None

    def collect(self) -> Iterator[Any]:
        if self.manager is None:
            return
        stats = self.manager.stats
        loads = CounterMetricFamily("parley_tts_model_loads", "Model loads.")
        loads.add_metric([], stats.loads)
        yield loads
        evictions = CounterMetricFamily(
            "parley_tts_model_evictions", "Model evictions by reason.", labels=["reason"]
        )
        for reason, count in stats.evictions.items():
            evictions.add_metric([reason], count)
        yield evictions
        resident = GaugeMetricFamily("parley_tts_models_resident", "Models in memory.")
        resident.add_metric([], len(self.manager.resident()))
        yield resident


class TTSMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "parley_tts_requests",
            "Speech requests by model and outcome.",
            ["model", "outcome"],
            registry=registry,
        )
        self.ttfb = Histogram(
            "parley_tts_ttfb_seconds",
            "Request to first audio bytes.",
            ["model"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.rtf = Histogram(
            "parley_tts_realtime_factor",
            "Synthesis time / audio duration per request.",
            ["model"],
            buckets=_RTF_BUCKETS,
            registry=registry,
        )
        self.sentences = Counter(
            "parley_tts_sentences", "Sentences synthesized.", ["model"], registry=registry
        )
        self.stream_errors = Counter(
            "parley_tts_stream_errors",
            "Streams ended by a backend failure.",
            ["model"],
            registry=registry,
        )
        self.streams_active = Gauge(
            "parley_tts_streams_active", "Syntheses running.", registry=registry
        )
        self.queue_depth = Gauge(
            "parley_tts_queue_depth", "Requests waiting for a stream.", registry=registry
        )
        self.vram_used = Gauge(
            "parley_tts_vram_used_bytes", "GPU memory allocated by this process.", registry=registry
        )
        self._manager = _ManagerCollector()
        registry.register(self._manager)

    def observe_state(self, manager: Any, active: int, waiting: int) -> None:
        self._manager.manager = manager
        self.streams_active.set(active)
        self.queue_depth.set(waiting)
        torch = sys.modules.get("torch")  # only if XTTS brought it in
        if torch is not None and torch.cuda.is_available():
            self.vram_used.set(torch.cuda.memory_allocated())
