"""Parley's voice runtime: WebRTC in, VAD + ASR, an OpenAI-compatible LLM, TTS, WebRTC out."""

from parley_runtime.config import RuntimeSettings
from parley_runtime.server import create_app

__all__ = ["RuntimeSettings", "create_app"]
