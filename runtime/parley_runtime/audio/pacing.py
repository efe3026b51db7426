"""Real-time pacing for outbound 48 kHz tracks: an absolute 20 ms schedule.

The next frame is due at start + samples sent / rate, not "20 ms after the last one", so
lateness never accumulates and a ten-minute session does not drift. A frame that leaves more
than two frame periods (40 ms) after it was due is counted as late (`late`): about what a
receiver's jitter buffer absorbs without a glitch. It is the media-health signal that
backpressure and SCOS read.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Awaitable, Callable

import av
import numpy as np

from parley.pcm import OUTPUT_FRAME_SAMPLES, OUTPUT_RATE

_TIME_BASE = fractions.Fraction(1, OUTPUT_RATE)
LATE_AFTER_S = 2 * OUTPUT_FRAME_SAMPLES / OUTPUT_RATE


class FramePacer:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._sent = 0
        self.late = False  # whether the frame just released left more than 40 ms late

    async def wait(self) -> int:
        """Sleep until the next frame is due; return its timestamp (pts, in samples).
        Decide the frame's content after this returns, so a `clear` during the wait counts."""
        if self._start is None:
            self._start = self.clock()
            self.late = False
        else:
            due = self._start + self._sent / OUTPUT_RATE
            wait = due - self.clock()
            if wait > 0:
                await self._sleep(wait)
            self.late = self.clock() - due > LATE_AFTER_S
        pts = self._sent
        self._sent += OUTPUT_FRAME_SAMPLES
        return pts


def audio_frame(pcm: np.ndarray, pts: int) -> av.AudioFrame:
    """Wrap one 20 ms frame of 48 kHz mono int16 for aiortc."""
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = OUTPUT_RATE
    frame.pts = pts
    frame.time_base = _TIME_BASE
    return frame
