"""The names OpenAI's speech API and its SDK use, so that a client written for OpenAI works
unchanged: its model names mean this server's default model, and its voice names go through
the configurable `openai_voices` map (`TTSSettings`)."""

from __future__ import annotations

# `openai/types/audio/speech_model.py` and the dated snapshot its docstring names.
OPENAI_MODELS = (
    "tts-1",
    "tts-1-hd",
    "gpt-4o-mini-tts",
    "gpt-4o-mini-tts-2025-03-20",
    "gpt-4o-mini-tts-2025-12-15",
)

# The built-in voices of `openai/types/audio/speech_create_params.py`.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "cedar",
    "coral",
    "echo",
    "fable",
    "marin",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)

# In the voice map, this target means the requested model's default voice.
DEFAULT_VOICE = "default"
