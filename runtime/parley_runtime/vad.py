"""Silero VAD (v6 ONNX, the file faster-whisper ships) run with onnxruntime, streaming.

One `SileroVAD` holds the ONNX session and is shared; each session gets a `VADStream` that
keeps the LSTM state and the 64-sample context between 32 ms windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from parley_runtime.models import silero_vad_path

WINDOW = 512  # samples at 16 kHz = 32 ms
CONTEXT = 64


class SileroVAD:
    def __init__(self, path: Path | None = None) -> None:
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            str(path or silero_vad_path()), providers=["CPUExecutionProvider"], sess_options=opts
        )

    def stream(self) -> VADStream:
        return VADStream(self)

    def run(
        self, window: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        prob, h, c = self._session.run(None, {"input": window, "h": h, "c": c})
        return float(np.asarray(prob).reshape(-1)[0]), h, c


class VADStream:
    """Feed 16 kHz int16 audio in any sizes; get one speech probability per 32 ms window."""

    def __init__(self, model: SileroVAD) -> None:
        self._model = model
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, pcm: np.ndarray) -> list[float]:
        self._pending = np.concatenate([self._pending, pcm.astype(np.float32) / 32768.0])
        probs = []
        while len(self._pending) >= WINDOW:
            chunk, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            window = np.concatenate([self._context, chunk]).reshape(1, -1)
            prob, self._h, self._c = self._model.run(window, self._h, self._c)
            self._context = chunk[-CONTEXT:]
            probs.append(prob)
        return probs
