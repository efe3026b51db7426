"""The agent's voice: a paced 48 kHz outbound track with `pause`, `resume` and `clear`.

aiortc pulls one 20 ms frame at a time from `recv`, paced by `FramePacer`. When nothing is
queued, or while paused, the track sends silence. `clear` drops everything queued at once,
which is what makes a barge-in stop the agent within one frame.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from parley.pcm import OUTPUT_FRAME_SAMPLES
from parley_runtime.audio.pacing import FramePacer, audio_frame

_SILENCE = np.zeros(OUTPUT_FRAME_SAMPLES, dtype=np.int16)


@dataclass
class PlaybackSegment:
    """One sentence of agent speech and how much of it has actually been played."""

    text: str
    frames: int = 0
    played: int = 0
    first_played_at: float | None = None

    @property
    def heard_fraction(self) -> float:
        return 1.0 if self.frames == 0 else min(1.0, self.played / self.frames)


@dataclass
class _Frame:
    pcm: np.ndarray
    segment: PlaybackSegment | None = None


@dataclass
class _Mark:
    callback: Callable[[], None] = field(repr=False)


class AgentAudioOutput(MediaStreamTrack):
    kind = "audio"

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__()
        self._pacer = FramePacer(clock, sleep)
        self._queue: deque[_Frame | _Mark] = deque()
        self._remainder = np.zeros(0, dtype=np.int16)
        self._paused = False
        self.frames_sent = 0
        self.voiced_frames_sent = 0

    # -- control --------------------------------------------------------------------------

    def push(self, pcm: np.ndarray, segment: PlaybackSegment | None = None) -> None:
        """Queue 48 kHz mono int16 samples; they leave in 20 ms frames."""
        pcm = np.concatenate([self._remainder, pcm.astype(np.int16)])
        whole = len(pcm) // OUTPUT_FRAME_SAMPLES * OUTPUT_FRAME_SAMPLES
        for start in range(0, whole, OUTPUT_FRAME_SAMPLES):
            self._queue.append(_Frame(pcm[start : start + OUTPUT_FRAME_SAMPLES], segment))
            if segment is not None:
                segment.frames += 1
        self._remainder = pcm[whole:]

    def flush(self, segment: PlaybackSegment | None = None) -> None:
        """Pad and queue the samples that did not fill a whole frame."""
        if self._remainder.size:
            pad = OUTPUT_FRAME_SAMPLES - self._remainder.size
            self.push(np.zeros(pad, dtype=np.int16), segment)

    def mark(self, callback: Callable[[], None]) -> None:
        """Run `callback` when playback reaches this point of the queue."""
        self._queue.append(_Mark(callback))

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def clear(self) -> None:
        """Drop everything queued (marks included) and un-pause."""
        self._queue.clear()
        self._remainder = np.zeros(0, dtype=np.int16)
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    # -- aiortc ---------------------------------------------------------------------------

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._pacer.wait()
        self.frames_sent += 1
        return audio_frame(self._next_pcm(), pts)

    def _next_pcm(self) -> np.ndarray:
        if self._paused:
            return _SILENCE
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Mark):
                item.callback()
                continue
            if item.segment is not None:
                item.segment.played += 1
                if item.segment.first_played_at is None:
                    item.segment.first_played_at = self._pacer.clock()
            self.voiced_frames_sent += 1
            return item.pcm
        return _SILENCE
