"""`parley tts serve` settings: flags over `PARLEY_TTS_*` environment variables (and
`PARLEY_VRAM_CAP_GIB` for the GPU memory cap)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley_tts.openai_names import DEFAULT_VOICE, OPENAI_VOICES
from parley_tts.voices import DEFAULT_PIPER_VOICE


class TTSSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PARLEY_TTS_", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8000

    default_model: Literal["piper", "xtts"] = "piper"
    default_voice: str = Field(DEFAULT_PIPER_VOICE, description="Voice used when none is asked.")
    piper_voices: dict[str, str] = Field(
        default_factory=dict, description="Extra Piper voices: name -> path of a voice .onnx."
    )
    openai_voices: dict[str, str] = Field(
        default_factory=lambda: dict.fromkeys(OPENAI_VOICES, DEFAULT_VOICE),
        description="Voice names a request may use for a configured voice: name -> voice, "
        "'default' being the model's default voice. The default maps OpenAI's voices.",
    )
    preload: list[str] = Field(
        default_factory=list, description="More models to load at startup, e.g. ['xtts']."
    )

    xtts_model_dir: str = Field(
        "", description="Local XTTS-v2 checkpoint (config.json, model.pth, vocab.json, ...)."
    )
    xtts_device: Literal["cuda", "cpu"] = "cuda"
    xtts_vram_gib: float = Field(3.0, gt=0, description="VRAM one XTTS-v2 instance needs.")
    vram_cap_gib: float | None = Field(
        None,
        gt=0,
        validation_alias="PARLEY_VRAM_CAP_GIB",
        description="This process's GPU memory cap (torch.cuda.set_per_process_memory_fraction).",
    )

    max_resident: int = Field(4, ge=1, description="LRU cap on loaded models.")
    idle_ttl_s: float = Field(600.0, gt=0, description="Evict a model idle this long.")
    max_parallel_loads: int = Field(1, ge=1)

    max_streams: int = Field(4, ge=1, description="Syntheses running at once.")
    max_queue: int = Field(8, ge=0, description="Requests waiting for a stream; beyond: 503.")
    retry_after_s: int = Field(2, ge=1)
    max_input_chars: int = Field(4096, ge=1, description="Longer inputs are refused with 413.")
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Larger request bodies are refused with 413, unread."
    )
    piper_threads: int = Field(2, ge=1, description="Threads shared by all Piper voices.")
    api_docs: bool = Field(False, description="Serve /docs, /redoc and /openapi.json.")

    @model_validator(mode="after")
    def _openai_voices_exist(self) -> Self:
        """With Piper as the default model, every mapped voice must be a configured one (XTTS
        speakers are known only once the checkpoint is loaded)."""
        if self.default_model != "piper":
            return self
        known = {DEFAULT_VOICE, DEFAULT_PIPER_VOICE, self.default_voice, *self.piper_voices}
        wrong = {name: voice for name, voice in self.openai_voices.items() if voice not in known}
        if wrong:
            raise ValueError(
                f"openai_voices maps to voices Piper does not have: {wrong}; "
                f"configured voices: {sorted(known - {DEFAULT_VOICE})}"
            )
        return self
