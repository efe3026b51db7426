"""PCM conventions shared by the runtime and the TTS server: int16 mono numpy arrays; 16 kHz
toward VAD/ASR, 48 kHz 20 ms frames out of the runtime, 24 kHz out of the TTS server."""

from __future__ import annotations

import av
import numpy as np

INPUT_RATE = 16_000
OUTPUT_RATE = 48_000
OUTPUT_FRAME_SAMPLES = OUTPUT_RATE // 50  # 20 ms
#: The TTS server streams PCM at OpenAI's `pcm` rate whatever the backend (Piper: 22.05 kHz).
SPEECH_RATE = 24_000

#: Peak amplitude above which a frame counts as audible (about -40 dBFS).
VOICED_PEAK = 330


def is_voiced(pcm: np.ndarray) -> bool:
    return bool(pcm.size) and int(np.max(np.abs(pcm.astype(np.int32)))) > VOICED_PEAK


def _audible(pcm: np.ndarray) -> np.ndarray:
    """The indices of the samples above `VOICED_PEAK`."""
    return np.flatnonzero(np.abs(pcm.astype(np.int32)) > VOICED_PEAK)


def trim_leading_silence(pcm: np.ndarray, rate: int, keep_ms: int = 10) -> np.ndarray:
    """Drop the near-silent lead-in a TTS voice puts before a sentence (it is pure latency)."""
    loud = _audible(pcm)
    if loud.size == 0:
        return pcm[:0]
    start = max(0, int(loud[0]) - rate * keep_ms // 1000)
    return pcm[start:]


def trim_trailing_silence(pcm: np.ndarray, rate: int, keep_ms: int = 40) -> np.ndarray:
    """Drop the near-silent tail a TTS voice puts after a sentence, keeping `keep_ms`."""
    loud = _audible(pcm)
    if loud.size == 0:
        return pcm[:0]
    return pcm[: int(loud[-1]) + 1 + rate * keep_ms // 1000]


class Resampler:
    """Stateful resampler to mono int16 at `rate` (libswresample through PyAV).

    Keeps filter state between calls, so a stream resampled in pieces has no seams.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def frame(self, frame: av.AudioFrame) -> np.ndarray:
        """Resample one decoded frame (any layout or rate)."""
        return self._collect(self._resampler.resample(frame))

    def pcm(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        """Resample mono int16 samples recorded at `rate`."""
        if pcm.size == 0:
            return pcm.astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)
