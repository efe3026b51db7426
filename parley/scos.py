"""SCOS, `parley.scos/v1`: the per-pod summary a runtime serves at `GET /v1/scos`.

One definition for both sides: the runtime builds it, the operator (and `parley soak`) parse it.
It lives in the base package so that importing it needs only pydantic, never the runtime's
media or model packages.

What it may carry is fixed by DESIGN.md: aggregates of one pod only. Never a transcript, a
text, an address or anything else about one user; SCOS stays inside the cluster. Latencies are
percentiles over a stated sliding window, with their sample counts, and warm-up turns (the
first 3 turns or 60 s of a session) are kept apart from the steady state.

`docs/scos.schema.json` is this model exported as JSON Schema (`parley scos schema`); a test
keeps the two equal.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "parley.scos/v1"


class BackpressureLevel(IntEnum):
    """Five levels; the order of degradation is fixed: visuals, then verbosity, then admission.
    The audio of an admitted session is never degraded."""

    NORMAL = 0
    VISUALS_OFF = 1  # no `visemes` events
    BRIEF = 2  # shorter answers: lower max_tokens and a brevity instruction
    ADMISSION_LIMITED = 3  # new sessions only up to a reduced cap
    SESSION_REJECT = 4  # every new session gets 503 + Retry-After


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sessions(_Strict):
    active: int = Field(ge=0, description="Sessions open now.")
    capacity: int = Field(ge=1, description="The pod's session cap (--max-sessions).")
    admission_cap: int = Field(
        ge=0, description="Sessions admitted at the current backpressure level (≤ capacity)."
    )
    admitted_total: int = Field(ge=0, description="Sessions admitted since the process started.")
    rejected_total: int = Field(ge=0, description="Offers refused with 503 (cap, level, drain).")
    cut_total: int = Field(
        ge=0, description="Sessions the pod closed while the client was still there (drain end)."
    )


class Backpressure(_Strict):
    level: BackpressureLevel
    name: str = Field(description="The level's name, e.g. ADMISSION_LIMITED.")
    since: float = Field(description="Unix time the pod entered this level.")
    reasons: list[str] = Field(
        description="The triggers that hold the level, e.g. 'sessions 7/8 >= 90 %'."
    )
    changes_total: int = Field(ge=0, description="Level changes since the process started.")


class Percentiles(_Strict):
    samples: int = Field(ge=0)
    p50_ms: float | None = Field(None, description="None without samples.")
    p95_ms: float | None = None


class LatencySet(_Strict):
    ttfa: Percentiles = Field(description="End-of-turn decision → first agent audio frame sent.")
    v2v: Percentiles = Field(description="Voice-to-voice, as reported by clients that measure it.")
    barge_in: Percentiles = Field(description="Voiced onset of an interruption → agent silent.")


class Latency(_Strict):
    window_s: float = Field(gt=0, description="The sliding window the percentiles cover.")
    steady: LatencySet = Field(description="Turns after a session's first 3 turns or 60 s.")
    warm_up: LatencySet = Field(description="A session's first 3 turns or first 60 s.")


class Turns(_Strict):
    """Turns ended within the window, by outcome."""

    completed: int = Field(0, ge=0)
    interrupted: int = Field(0, ge=0)
    reset_no_audio: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)


class Media(_Strict):
    event_loop_lag_p95_ms: float = Field(ge=0, description="Over the window.")
    frames_sent: int = Field(ge=0, description="Outbound 20 ms frames within the window.")
    late_frame_ratio: float = Field(
        ge=0, le=1, description="Share of outbound frames sent more than 40 ms late."
    )


class Scos(_Strict):
    """The whole summary; `schema` names the version."""

    schema_: Literal["parley.scos/v1"] = Field("parley.scos/v1", alias="schema")
    generated_at: float = Field(description="Unix time of this summary.")
    uptime_s: float = Field(ge=0)
    ready: bool = Field(description="Models loaded and not draining (what /readyz says).")
    draining: bool
    sessions: Sessions
    backpressure: Backpressure
    latency: Latency
    turns: Turns
    media: Media

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def json_schema() -> dict[str, object]:
    """The JSON Schema of `Scos`, as exported into `docs/scos.schema.json`."""
    schema = Scos.model_json_schema(by_alias=True)
    schema["$id"] = "https://parley.dev/schemas/scos/v1.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
