"""Text to speech: a small base class, the in-process Piper backend, an HTTP client backend,
and the sentence chunker that feeds them."""

from parley_runtime.tts.base import TTSError, TTSService
from parley_runtime.tts.chunker import SentenceChunker
from parley_runtime.tts.http import HTTPSpeechClient
from parley_runtime.tts.piper import PiperTTS

__all__ = ["HTTPSpeechClient", "PiperTTS", "SentenceChunker", "TTSError", "TTSService"]
