"""Telemetry as observers: the conversation reports what happened, observers decide what to
do with it (Prometheus here; the SCOS summary later). No metrics code in the audio path."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class TurnMetrics:
    """Per-turn latencies in milliseconds (None when a stage did not run)."""

    turn: int
    ttfa_ms: float | None = None
    asr_ms: float | None = None
    llm_first_token_ms: float | None = None
    llm_first_sentence_ms: float | None = None
    tts_first_chunk_ms: float | None = None
    endpoint_ms: int | None = None
    speculative: bool = False

    def as_event(self) -> dict[str, object]:
        return {"type": "metrics", **asdict(self)}


class ConversationObserver:
    """Base observer: override what you need."""

    def on_turn(self, metrics: TurnMetrics) -> None:
        pass

    def on_barge_in(self, confirmed: bool) -> None:
        pass

    def on_speculation(self, used: bool) -> None:
        pass

    def on_error(self, code: str) -> None:
        pass


_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)


class PrometheusObserver(ConversationObserver):
    def __init__(self, registry: CollectorRegistry) -> None:
        def hist(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, registry=registry, buckets=_LATENCY_BUCKETS)

        self.ttfa = hist("parley_ttfa_seconds", "End of turn to first agent audio frame sent.")
        self.asr = hist("parley_asr_final_seconds", "Final ASR transcription time.")
        self.llm = hist("parley_llm_first_sentence_seconds", "LLM request to first sentence.")
        self.tts = hist("parley_tts_first_chunk_seconds", "TTS request to first audio chunk.")
        self.barge_ins = Counter(
            "parley_barge_ins", "Barge-in candidates by outcome.", ["outcome"], registry=registry
        )
        self.speculations = Counter(
            "parley_speculations", "Speculative replies by outcome.", ["outcome"], registry=registry
        )
        self.errors = Counter(
            "parley_turn_errors", "Turns that hit an error, by code.", ["code"], registry=registry
        )
        self.sessions_active = Gauge(
            "parley_sessions_active", "Sessions currently open.", registry=registry
        )
        self.sessions_capacity = Gauge(
            "parley_sessions_capacity", "Session cap of this pod.", registry=registry
        )
        self.sessions_rejected = Counter(
            "parley_sessions_rejected", "Session offers refused (cap or drain).", registry=registry
        )
        self.sessions_reaped = Counter(
            "parley_sessions_reaped",
            "Sessions closed by the reaper.",
            ["reason"],
            registry=registry,
        )

    def on_turn(self, metrics: TurnMetrics) -> None:
        for histogram, value in (
            (self.ttfa, metrics.ttfa_ms),
            (self.asr, metrics.asr_ms),
            (self.llm, metrics.llm_first_sentence_ms),
            (self.tts, metrics.tts_first_chunk_ms),
        ):
            if value is not None:
                histogram.observe(value / 1000)

    def on_barge_in(self, confirmed: bool) -> None:
        self.barge_ins.labels("confirmed" if confirmed else "false").inc()

    def on_speculation(self, used: bool) -> None:
        self.speculations.labels("used" if used else "discarded").inc()

    def on_error(self, code: str) -> None:
        self.errors.labels(code).inc()
