"""Runtime settings: one pydantic model, filled from flags or `PARLEY_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley.security.clients import parse_networks

DEFAULT_SYSTEM_PROMPT = (
    "You are Parley, a friendly voice assistant. Always answer in English, in one or two "
    "short spoken sentences. Do not use lists, markdown or emoji."
)


#: GPU serving meets DESIGN.md's budgets (TTFA p95 250 ms, first audio within 500 ms). The
#: embedded CPU stack cannot: a turn the speculative path missed takes the whole pipeline
#: after the commit (~0.9 s unloaded, twice that for a cold first turn on 2 busy cores).
#: Unless set, these follow `asr_device`.
_BY_DEVICE: dict[str, dict[str, float]] = {
    "cuda": {"ttfa_slo_ms": 250, "turn_deadline_ms": 500},
    "cpu": {"ttfa_slo_ms": 500, "turn_deadline_ms": 3000},
}
#: Backpressure level 2 puts this after the user's words. Over twelve questions to SmolLM2 it
#: made answers 25 tokens long on average against 37 without; in the system prompt it changed
#: nothing (38), and worded "The service is busy: answer ..." after the question it drew
#: answers about the service ("This service is a great example of ...").
BRIEF_INSTRUCTION = "Answer in one short sentence."


class RuntimeSettings(BaseSettings):
    """Everything `parley runtime serve` can be told. Environment: `PARLEY_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080

    ice_host_addresses: list[str] = Field(
        default_factory=list,
        description="Addresses for host ICE candidates; empty = every interface (aioice's "
        "default). The embedded demo uses 127.0.0.1.",
    )
    ice_servers: list[str] = Field(
        default_factory=list, description="STUN/TURN URLs; none by default (no outside traffic)."
    )

    jitter_prefetch_frames: int = Field(
        0,
        ge=0,
        le=8,
        description="20 ms frames held by the inbound jitter buffer (aiortc: 4); 0: none, each "
        "packet is heard as it arrives.",
    )

    max_sessions: int = Field(8, ge=1, description="Session cap; beyond it POST answers 503.")
    drain_timeout_s: float = Field(
        600.0, gt=0, description="SIGTERM: how long live sessions may go on before they are cut."
    )
    retry_after_s: int = Field(5, ge=1)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Reap a session whose audio has not arrived this long after its answer.",
    )
    idle_timeout_s: float = Field(20.0, gt=0, description="Reap a session with no inbound audio.")

    api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens that may create sessions; none (and no file): anyone may.",
    )
    api_tokens_file: str = Field(
        "", description="A file of such tokens, one a line (a mounted Secret); read on change."
    )
    admin_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens for drain, listing and ending any session; none (and no "
        "file): only loopback clients may.",
    )
    admin_tokens_file: str = Field(
        "", description="A file of admin tokens, one a line (the operator mounts its Secret)."
    )
    session_rate_per_minute: int = Field(
        5,
        ge=0,
        description="Session creations per client per minute; 0: no limit. Loopback clients "
        "and admin tokens are not limited.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Proxies (addresses or networks) whose X-Forwarded-For names the client.",
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="Host names answered (DNS rebinding); unset: the loopback names when "
        "listening on a loopback address, any name otherwise.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins whose pages may call the API; none by default."
    )
    api_docs: bool = Field(False, description="Serve /docs, /redoc and /openapi.json.")

    asr_model: str = Field("tiny.en", description="tiny.en (packaged) or a CTranslate2 model dir.")
    asr_device: Literal["cpu", "cuda"] = "cpu"
    asr_compute_type: str = "int8"
    asr_threads: int = Field(2, ge=1)
    asr_window: Literal["fit", "full"] = Field(
        "fit",
        description="fit: encode the utterance only (fast); full: Whisper's 30 s window.",
    )

    llm_url: str = Field("http://127.0.0.1:8081/v1", description="OpenAI-compatible base URL.")
    llm_model: str = "SmolLM2-135M-Instruct"
    llm_api_key: str = ""
    llm_max_tokens: int = Field(60, ge=1)
    llm_temperature: float = 0.3
    llm_seed: int | None = Field(
        None,
        description="Sampling seed sent with every request (OpenAI's `seed`), for answers that "
        "repeat run to run; none: the server's own randomness.",
    )
    llm_frequency_penalty: float = Field(
        0.5,
        ge=-2,
        le=2,
        description="OpenAI's `frequency_penalty`, sent with every request unless 0: without "
        "it SmolLM2 loops (\"I'm a person. I'm a person. ...\") and repeats its earlier answers.",
    )
    llm_timeout_s: float = 20.0
    llm_slots: int = Field(
        0,
        ge=0,
        description="llama-server's slots (its --parallel): each session keeps one for its "
        "conversation (llama.cpp's `id_slot`), so that no other session's request takes it; "
        "sessions beyond them let the server choose. Only for a llama-server started with "
        "--no-cache-idle-slots, as `make demo` starts it. 0: the server chooses (vLLM).",
    )
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    llm_prefill: bool = Field(
        True,
        description="Have the LLM server read ahead in the session's slot: the system prompt "
        "when the session starts, and the conversation up to the user's words at each partial "
        "transcript, so the request at the end of a turn reads only the rest of the question "
        "(1-token requests).",
    )
    history_token_budget: int = Field(8192, ge=256)
    history_rollover_tokens: int = Field(7500, ge=128)

    tts_url: str = Field(
        "", description="OpenAI-compatible /v1/audio/speech server; empty = Piper."
    )
    tts_voice: str = Field("en_US-joe-medium", description="Piper voice name or .onnx path.")
    tts_model: str = "piper"
    first_piece_words: int = Field(
        5,
        ge=0,
        description="The answer's first piece of speech ends after this many words if no "
        "sentence or clause has ended by then; 0: whole sentences and clauses only.",
    )

    vad_threshold: float = Field(0.5, gt=0, lt=1)
    endpoint_min_ms: int = Field(400, ge=100)
    endpoint_max_ms: int = Field(1200, ge=200)
    endpoint_initial_ms: int = Field(700, ge=100)
    speculate_after_ms: int = Field(
        96, ge=32, description="Silence that starts speculative work (three VAD windows)."
    )
    early_endpoint_ms: int = Field(
        250,
        ge=0,
        description="Silence that ends a turn whose transcript sounds finished (adapts like "
        "the endpoint); 0: off, always wait for the endpoint.",
    )
    barge_in_confirm_ms: int = Field(200, ge=32, description="Speech that confirms a barge-in.")
    partial_interval_ms: int = Field(1200, ge=200, description="Min gap between partial ASR runs.")
    max_utterance_ms: int = Field(
        30_000,
        ge=1000,
        description="An utterance this long is committed as the turn, however it goes on.",
    )

    ttfa_slo_ms: float = Field(
        250,
        gt=0,
        description="TTFA p95 objective the backpressure compares against "
        "(default by asr_device: 250 on cuda, 500 on cpu).",
    )
    turn_deadline_ms: int = Field(
        500,
        ge=50,
        description="A committed turn with no first audio by then is reset "
        "(default by asr_device: 500 on cuda, 3000 on cpu).",
    )
    signal_window_s: float = Field(60.0, gt=0, description="Window of the SCOS percentiles.")
    backpressure_hold_s: float = Field(
        10.0, ge=0, description="Calm time before backpressure steps down one level."
    )
    backpressure_load_steps: list[float | None] = Field(
        default_factory=lambda: [0.5, 0.75, None, None],
        min_length=4,
        max_length=4,
        description="Sessions/capacity that enter levels 1-4 (visuals off, brief, admission "
        "limited, reject); null: capacity does not drive that level (the hard cap does).",
    )
    backpressure_loop_lag_ms: list[float] = Field(
        default_factory=lambda: [50.0, 100.0, 150.0, 250.0],
        min_length=4,
        max_length=4,
        description="Event-loop lag p95 that enters levels 1-4.",
    )
    backpressure_late_frames: list[float] = Field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1],
        min_length=4,
        max_length=4,
        description="Share of outbound frames sent > 40 ms late that enters levels 1-4.",
    )
    admission_limited_fraction: float = Field(
        0.5, gt=0, le=1, description="Share of capacity admitted at ADMISSION_LIMITED."
    )
    brief_max_tokens_factor: float = Field(
        0.7, gt=0, le=1, description="max_tokens multiplier at level BRIEF and above."
    )
    visuals: bool = Field(True, description="Send `visemes` events (mouth shapes).")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    @field_validator("api_tokens_file", "admin_tokens_file")
    @classmethod
    def _readable(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"no token file at {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_device(cls, data: Any) -> Any:
        if isinstance(data, dict):
            device = str(data.get("asr_device", "cpu"))
            for name, value in _BY_DEVICE.get(device, _BY_DEVICE["cpu"]).items():
                data.setdefault(name, value)
        return data
