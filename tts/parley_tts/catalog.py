"""What the server can speak with: models, their voices, and the key each loads under.

Piper voices are separate models (one ONNX file each, key `piper:<voice>`); XTTS-v2 is one
model (key `xtts`) whose voices are the speakers in its checkpoint, known once it is loaded.
OpenAI's model names mean the default model, and a voice that is not a configured one is
looked up in the `openai_voices` map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parley_tts.config import TTSSettings
from parley_tts.openai_names import DEFAULT_VOICE, OPENAI_MODELS
from parley_tts.voices import DEFAULT_PIPER_VOICE


class CatalogError(LookupError):
    """An unknown model or voice; the message names the known ones."""


@dataclass
class Catalog:
    piper_voices: dict[str, str] = field(default_factory=dict)  # name -> name or .onnx path
    xtts: bool = False
    default_model: str = "piper"
    default_voice: str = DEFAULT_PIPER_VOICE
    openai_voices: dict[str, str] = field(default_factory=dict)  # name -> voice or 'default'

    @classmethod
    def from_settings(cls, settings: TTSSettings) -> Catalog:
        voices = {DEFAULT_PIPER_VOICE: DEFAULT_PIPER_VOICE, **settings.piper_voices}
        if settings.default_model == "piper" and settings.default_voice not in voices:
            voices[settings.default_voice] = settings.default_voice
        return cls(
            piper_voices=voices,
            xtts=bool(settings.xtts_model_dir),
            default_model=settings.default_model,
            default_voice=settings.default_voice,
            openai_voices=dict(settings.openai_voices),
        )

    @property
    def models(self) -> list[str]:
        return ["piper", "xtts"] if self.xtts else ["piper"]

    def keys(self) -> list[str]:
        keys = [f"piper:{voice}" for voice in self.piper_voices]
        return [*keys, "xtts"] if self.xtts else keys

    def model(self, requested: str | None) -> str:
        """The model a request names: OpenAI's names and none at all mean the default."""
        if requested is None or requested in OPENAI_MODELS:
            return self.default_model
        if requested not in self.models:
            raise CatalogError(
                f"unknown model {requested!r}; known models: {self.models}, "
                f"or OpenAI's {list(OPENAI_MODELS)} for {self.default_model}"
            )
        return requested

    def voice(self, model: str, requested: str | None, known: list[str]) -> str | None:
        """The configured voice a request names: itself, or its entry in the OpenAI voice map.
        None means the model's default voice."""
        if requested is None or requested in known:
            return requested
        target = self.openai_voices.get(requested)
        if target is None:
            raise CatalogError(
                f"unknown voice {requested!r} for {model}; known voices: {sorted(known)}, "
                f"or mapped: {sorted(self.openai_voices)}"
            )
        if target == DEFAULT_VOICE:
            return None
        if target not in known:
            raise CatalogError(
                f"voice {requested!r} maps to {target!r}, which {model} does not have; "
                f"known voices: {sorted(known)}"
            )
        return target

    def default_xtts_voice(self) -> str | None:
        """The configured default voice when XTTS is the default model (else its first speaker)."""
        if self.default_model == "xtts" and self.default_voice != DEFAULT_PIPER_VOICE:
            return self.default_voice
        return None

    def default_key(self) -> str:
        return self.key(self.default_model, None)

    def key(self, model: str, voice: str | None) -> str:
        """The manager key for a request (`model` as `model()` resolved it); raises
        `CatalogError` naming what is known."""
        if model == "xtts":
            return "xtts"
        name = self.voice("piper", voice, list(self.piper_voices))
        if name is None:
            name = self.default_voice if self.default_model == "piper" else DEFAULT_PIPER_VOICE
        return f"piper:{name}"
