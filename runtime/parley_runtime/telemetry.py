"""Telemetry as observers: the conversation reports what happened, observers decide what to
do with it (Prometheus metrics and the SCOS summary, both in `parley_runtime.signals`). No
metrics code in the audio path."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class TurnOutcome(StrEnum):
    COMPLETED = "completed"  # the answer played out
    INTERRUPTED = "interrupted"  # a confirmed barge-in cut the answer
    SPECULATION_DISCARDED = "speculation_discarded"  # the user resumed before the commit
    RESET_NO_AUDIO = "reset_no_audio"  # no first audio within the turn deadline
    FAILED = "failed"  # the LLM or TTS failed


@dataclass
class TurnMetrics:
    """Per-turn latencies in milliseconds (None when a stage did not run)."""

    turn: int
    ttfa_ms: float | None = None
    asr_ms: float | None = None
    llm_first_token_ms: float | None = None
    llm_first_sentence_ms: float | None = None
    tts_first_chunk_ms: float | None = None
    endpoint_ms: int | None = None  # the silence that ended the turn
    early_endpoint: bool = False  # ended at the early endpoint: its words sounded finished
    speculative: bool = False
    steady: bool = False  # after the session's first 3 turns or 60 s (DESIGN.md)

    def as_event(self) -> dict[str, object]:
        return {"type": "metrics", **asdict(self)}


class ConversationObserver:
    """Base observer: override what you need. `steady` tells warm-up apart (DESIGN.md)."""

    def on_turn(self, metrics: TurnMetrics) -> None:
        """A committed turn's first audio left the server."""

    def on_turn_end(self, outcome: TurnOutcome, steady: bool) -> None:
        """A committed turn ended (speculations discarded before commit: `on_speculation`)."""

    def on_barge_in(self, confirmed: bool, latency_ms: float | None, steady: bool) -> None:
        """`latency_ms`: voiced onset of the interruption → agent audio stopped, server side
        (None when the agent was not audible)."""

    def on_speculation(self, used: bool) -> None:
        pass

    def on_error(self, code: str) -> None:
        pass

    def on_client_report(
        self, v2v_ms: float | None, barge_in_ms: float | None, steady: bool
    ) -> None:
        """Latencies a client measured on its side and sent on the `events` channel."""
