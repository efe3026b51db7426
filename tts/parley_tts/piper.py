"""In-process Piper (ONNX) synthesis, one sentence at a time in a worker thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from piper import PiperVoice, SynthesisConfig

from parley_tts.base import TTSError, TTSService
from parley_tts.voices import DEFAULT_PIPER_VOICE, piper_voice_path

_DONE = object()


class PiperTTS(TTSService):
    name = "piper"

    def __init__(
        self,
        voice: str = DEFAULT_PIPER_VOICE,
        workers: int = 2,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """`voice`: a packaged voice name or a path to a voice .onnx. Pass `executor` to share
        synthesis threads between voices (the TTS server does)."""
        self.voice_name = voice
        self._voice = PiperVoice.load(piper_voice_path(voice))
        self.sample_rate = int(self._voice.config.sample_rate)
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(workers, thread_name_prefix="piper")

    def voices(self) -> list[str]:
        return [self.voice_name]

    async def synthesize(
        self, text: str, voice: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        if voice not in (None, self.voice_name):
            raise TTSError(f"unknown voice {voice!r}; this server has {self.voices()}")
        loop = asyncio.get_running_loop()
        config = SynthesisConfig(length_scale=1.0 / speed)
        chunks: Iterator[object] = iter(self._voice.synthesize(text, config))
        while True:
            try:
                chunk = await loop.run_in_executor(self._executor, next, chunks, _DONE)
            except Exception as exc:
                raise TTSError(f"Piper failed on {text[:40]!r}: {exc!r}") from exc
            if chunk is _DONE:
                return
            yield np.asarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
