"""What the server can speak with: models, their voices, and the key each loads under.

Piper voices are separate models (one ONNX file each, key `piper:<voice>`); XTTS-v2 is one
model (key `xtts`) whose voices are the speakers in its checkpoint, known once it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parley_tts.config import TTSSettings
from parley_tts.voices import DEFAULT_PIPER_VOICE


class CatalogError(LookupError):
    """An unknown model or voice; the message names the known ones."""


@dataclass
class Catalog:
    piper_voices: dict[str, str] = field(default_factory=dict)  # name -> name or .onnx path
    xtts: bool = False
    default_model: str = "piper"
    default_voice: str = DEFAULT_PIPER_VOICE

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
        )

    @property
    def models(self) -> list[str]:
        return ["piper", "xtts"] if self.xtts else ["piper"]

    def keys(self) -> list[str]:
        keys = [f"piper:{voice}" for voice in self.piper_voices]
        return [*keys, "xtts"] if self.xtts else keys

    def default_xtts_voice(self) -> str | None:
        """The configured default voice when XTTS is the default model (else its first speaker)."""
        if self.default_model == "xtts" and self.default_voice != DEFAULT_PIPER_VOICE:
            return self.default_voice
        return None

    def default_key(self) -> str:
        return self.key(self.default_model, None)

    def key(self, model: str, voice: str | None) -> str:
        """The manager key for a request; raises `CatalogError` naming what is known."""
        if model not in self.models:
            raise CatalogError(f"unknown model {model!r}; known models: {self.models}")
        if model == "xtts":
            return "xtts"
        name = voice or (self.default_voice if self.default_model == "piper" else None)
        name = name or DEFAULT_PIPER_VOICE
        if name not in self.piper_voices:
            raise CatalogError(
                f"unknown voice {name!r} for piper; known voices: {sorted(self.piper_voices)}"
            )
        return f"piper:{name}"
