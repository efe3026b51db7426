"""Every Prometheus metric the runtime exports, defined here and nowhere else.

`RuntimeMetrics` owns them (one registry per app, so several apps can live in one process);
`PrometheusObserver` turns conversation events into samples; the session manager and the
signal loop set the gauges and counters they own through the same object. Latencies are
histograms in seconds whose buckets resolve 10 ms to 2 s.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from parley_runtime.telemetry import ConversationObserver, TurnMetrics, TurnOutcome

REJECT_REASONS = ("capacity", "backpressure", "draining")
#: A client's report beyond this is not a latency (a clock jump, a bogus client): dropped.
CLIENT_REPORT_MAX_S = 60.0
LATENCY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
)


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, registry=registry, buckets=LATENCY_BUCKETS)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=registry)

        # latency, per turn
        self.ttfa = histogram(
            "parley_ttfa_seconds", "End-of-turn decision to the first agent audio frame sent."
        )
        self.barge_in = histogram(
            "parley_barge_in_seconds",
            "Voiced onset of an interruption to the agent's audio stopping (server side).",
        )
        self.asr_final = histogram("parley_asr_final_seconds", "Final ASR transcription time.")
        self.llm_first_token = histogram(
            "parley_llm_first_token_seconds", "LLM request to its first token."
        )
        self.llm_first_sentence = histogram(
            "parley_llm_first_sentence_seconds", "LLM request to its first whole sentence."
        )
        self.tts_first_chunk = histogram(
            "parley_tts_first_chunk_seconds", "TTS request to its first audio chunk."
        )
        self.v2v = histogram(
            "parley_v2v_seconds",
            "Voice-to-voice as clients measure it and report it on the events channel (the "
            "user's last voiced sample to the first agent audio they heard).",
        )
        self.end_of_turn_delay = histogram(
            "parley_end_of_turn_delay_seconds",
            "Silence the endpointer waited for before committing the turn.",
        )
        # turns
        self.turns = counter("parley_turns", "Turns by outcome.", ("outcome",))
        self.barge_ins = counter(
            "parley_barge_ins", "Barge-in candidates by outcome (confirmed, false).", ("outcome",)
        )
        self.speculations = counter(
            "parley_speculations", "Speculative replies by outcome (used, discarded).", ("outcome",)
        )
        self.turn_errors = counter(
            "parley_turn_errors", "Turns that hit an error, by code.", ("code",)
        )
        # sessions
        self.sessions_active = gauge("parley_sessions_active", "Sessions currently open.")
        self.sessions_capacity = gauge("parley_sessions_capacity", "Session cap of this pod.")
        self.sessions_admitted = counter("parley_sessions_admitted", "Sessions admitted.")
        self.sessions_rejected = counter(
            "parley_sessions_rejected",
            "Session offers refused with 503, by reason (capacity, backpressure, draining).",
            ("reason",),
        )
        self.sessions_cut = counter(
            "parley_sessions_cut",
            "Sessions the pod closed while their client was still there (drain deadline).",
        )
        self.sessions_reaped = counter(
            "parley_sessions_reaped", "Sessions closed by the reaper, by reason.", ("reason",)
        )
        # load signals
        self.backpressure_level = gauge(
            "parley_backpressure_level",
            "Backpressure level: 0 NORMAL, 1 VISUALS_OFF, 2 BRIEF, 3 ADMISSION_LIMITED, "
            "4 SESSION_REJECT.",
        )
        self.backpressure_changes = counter(
            "parley_backpressure_changes",
            "Backpressure level changes, by the level entered.",
            ("level",),
        )
        self.draining = gauge("parley_draining", "1 while the pod drains (admits no sessions).")
        self.event_loop_lag = gauge(
            "parley_event_loop_lag_seconds", "Event-loop lag, p95 over the signal window."
        )
        self.frames_sent = counter("parley_outbound_frames", "Outbound 20 ms audio frames sent.")
        self.frames_late = counter(
            "parley_outbound_frames_late",
            "Outbound frames sent more than 40 ms after they were due.",
        )
        # every label value exists from the start, so rates and alerts see a zero, not nothing
        for outcome in TurnOutcome:
            self.turns.labels(outcome.value)
        for reason in REJECT_REASONS:
            self.sessions_rejected.labels(reason)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


class PrometheusObserver(ConversationObserver):
    """Conversation events → the turn metrics."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self.m = metrics

    def on_turn(self, metrics: TurnMetrics) -> None:
        for histogram, value in (
            (self.m.ttfa, metrics.ttfa_ms),
            (self.m.asr_final, metrics.asr_ms),
            (self.m.llm_first_token, metrics.llm_first_token_ms),
            (self.m.llm_first_sentence, metrics.llm_first_sentence_ms),
            (self.m.tts_first_chunk, metrics.tts_first_chunk_ms),
            (self.m.end_of_turn_delay, metrics.endpoint_ms),
        ):
            seconds = _seconds(value)
            if seconds is not None:
                histogram.observe(seconds)

    def on_turn_end(self, outcome: TurnOutcome, steady: bool) -> None:
        self.m.turns.labels(outcome.value).inc()

    def on_barge_in(self, confirmed: bool, latency_ms: float | None, steady: bool) -> None:
        self.m.barge_ins.labels("confirmed" if confirmed else "false").inc()
        seconds = _seconds(latency_ms)
        if confirmed and seconds is not None:
            self.m.barge_in.observe(seconds)

    def on_speculation(self, used: bool) -> None:
        self.m.speculations.labels("used" if used else "discarded").inc()
        if not used:
            self.m.turns.labels(TurnOutcome.SPECULATION_DISCARDED.value).inc()

    def on_error(self, code: str) -> None:
        self.m.turn_errors.labels(code).inc()

    def on_client_report(
        self, v2v_ms: float | None, barge_in_ms: float | None, steady: bool
    ) -> None:
        seconds = _seconds(v2v_ms)
        if seconds is not None and 0 <= seconds <= CLIENT_REPORT_MAX_S:
            self.m.v2v.observe(seconds)
