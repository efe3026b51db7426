"""In-process Piper (ONNX) synthesis, one sentence at a time in a worker thread.

Piper's ONNX threads sleep rather than spin while they wait (onnxruntime spins by default). The
voice shares its cores with Whisper and, in the embedded stack, with the LLM server decoding the
rest of the answer: spinning threads burn the cores those need, and one descheduled thread
stalls the others at every operator. Measured on this 2-core machine while llama-server decoded
60 tokens, the first chunk of a short sentence took 310 ms p50 (898 max) with two spinning
threads (the default), 223 (246) with two sleeping ones and 181 (231) with one; alone it took
115, 120 and 161 ms.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
from piper import PiperVoice, SynthesisConfig
from piper.config import PiperConfig

from parley_tts.base import TTSError, TTSService
from parley_tts.voices import DEFAULT_PIPER_VOICE, piper_voice_path

_DONE = object()


def load_voice(path: Path, threads: int = 2) -> PiperVoice:
    """`PiperVoice.load` for the CPU, with `threads` sleeping ONNX threads per synthesis."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


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
        self._voice = load_voice(piper_voice_path(voice))
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
