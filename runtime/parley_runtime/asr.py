"""Speech recognition with faster-whisper (CTranslate2), off the event loop.

Whisper always encodes a 30 s window, so every call costs about the same however short the
audio: partial transcripts are scheduled by the conversation, not run per frame. One worker
thread by default keeps a 2-core machine from oversubscribing itself.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from faster_whisper import WhisperModel

from parley.pcm import INPUT_RATE
from parley_runtime.models import whisper_model_dir


class SpeechRecognizer:
    def __init__(
        self,
        model: str = "tiny.en",
        device: str = "cpu",
        compute_type: str = "int8",
        threads: int = 2,
        workers: int = 1,
    ) -> None:
        self.model_name = model
        self._model = WhisperModel(
            str(whisper_model_dir(model)),
            device=device,
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=workers,
        )
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="asr")

    def transcribe_sync(self, pcm: np.ndarray) -> str:
        audio = pcm.astype(np.float32) / 32768.0
        segments, _ = self._model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    async def transcribe(self, pcm: np.ndarray) -> str:
        """Transcribe 16 kHz mono int16 audio."""
        if len(pcm) < INPUT_RATE // 10:
            return ""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe_sync, pcm)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
