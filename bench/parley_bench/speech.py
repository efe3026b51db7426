"""Synthesized user speech for tests and benchmarks (Piper, cached per text)."""

from __future__ import annotations

from functools import cache

import numpy as np

from parley.pcm import OUTPUT_RATE, Resampler
from parley_tts import PiperTTS

_spoken: dict[str, np.ndarray] = {}


@cache
def _voice() -> PiperTTS:
    return PiperTTS()


async def speech(text: str) -> np.ndarray:
    """`text` spoken by the Piper voice, as 48 kHz mono int16."""
    if text not in _spoken:
        tts = _voice()
        resampler = Resampler(OUTPUT_RATE)
        parts = [resampler.pcm(c, tts.sample_rate) async for c in tts.synthesize(text)]
        parts.append(resampler.flush())
        _spoken[text] = np.concatenate(parts)
    return _spoken[text]


def silence(ms: int) -> np.ndarray:
    return np.zeros(OUTPUT_RATE * ms // 1000, dtype=np.int16)
