"""Parley's speech synthesis: TTS backends behind one base class, the OpenAI-compatible
streaming speech server (`parley tts serve`) and the client the runtime uses to reach it."""

from parley_tts.base import TTSError, TTSService
from parley_tts.chunker import SentenceChunker
from parley_tts.client import HTTPSpeechClient
from parley_tts.piper import PiperTTS

__all__ = ["HTTPSpeechClient", "PiperTTS", "SentenceChunker", "TTSError", "TTSService"]
