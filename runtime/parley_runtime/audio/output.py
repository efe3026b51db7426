"""The agent's voice: a paced 48 kHz outbound track with `pause`, `resume` and `clear`.

aiortc pulls one 20 ms frame at a time from `recv`, paced by `FramePacer`. When nothing is
queued, or while paused, the track sends silence. `clear` drops everything queued at once,
which is what makes a barge-in stop the agent within one frame.

Listeners (`add_frame_listener`) see every frame as it leaves, with what was in it: the visuals
animate from the audio actually played, and the media counters count late frames. A listener
that raises is logged; it never stops the audio.
"""

from __future__ import annotations

import asyncio
import logging
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
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentFrame:
    """One 20 ms frame as it left the track."""

    pcm: np.ndarray  # 48 kHz mono int16, silence when nothing was playing
    voiced: bool  # agent speech (not padding silence or a paused track)
    late: bool  # left more than two frame periods after it was due
    at: float  # the track's clock when it left


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
        self._on_silenced: Callable[[float], None] | None = None
        self._listeners: list[Callable[[SentFrame], None]] = []
        self.frames_sent = 0
        self.voiced_frames_sent = 0
        self.late_frames = 0

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

    def add_frame_listener(self, listener: Callable[[SentFrame], None]) -> None:
        """Call `listener` with every frame as it leaves (on the event loop; keep it cheap)."""
        self._listeners.append(listener)

    def pause(self, on_silenced: Callable[[float], None] | None = None) -> None:
        """Send silence from the next frame on. `on_silenced` is called with the clock time of
        that first silent frame (how barge-in latency is measured on the server)."""
        self._paused = True
        self._on_silenced = on_silenced

    def resume(self) -> None:
        self._paused = False
        self._on_silenced = None

    def clear(self) -> None:
        """Drop everything queued (marks included) and un-pause."""
        self._queue.clear()
        self._remainder = np.zeros(0, dtype=np.int16)
        self.resume()

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
        voiced_before = self.voiced_frames_sent
        pcm = self._next_pcm()
        late = self._pacer.late
        self.late_frames += late
        if self._listeners:
            sent = SentFrame(
                pcm, self.voiced_frames_sent > voiced_before, late, self._pacer.clock()
            )
            for listener in self._listeners:
                try:
                    listener(sent)
                except Exception:
                    log.exception("frame listener %r failed", listener)
        return audio_frame(pcm, pts)

    def _next_pcm(self) -> np.ndarray:
        if self._paused:
            if self._on_silenced is not None:
                callback, self._on_silenced = self._on_silenced, None
                callback(self._pacer.clock())
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
