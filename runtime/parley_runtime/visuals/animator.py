"""`visemes` events from the agent audio as it is played, for a face on the client.

`VisemeAnimator.on_frame` is an `AgentAudioOutput` listener: it sees every 20 ms frame as it
leaves the track, so the mouth follows the audio actually sent (a barge-in that clears the
queue closes the mouth too) and each event goes out together with the audio it describes. It
emits at about `rate_hz` in audio time, analysing only the last 1/rate_hz of audio and only
when it emits, because it runs for every frame of every session.

When the agent stops speaking the face holds its pose, eases to neutral and then the animator
goes quiet: long silences cost nothing and send nothing. When `enabled()` turns False
(backpressure level VISUALS_OFF) it sends one neutral pose, if the face was not neutral, and
stops. The visuals never touch the audio: a visual frame that would be shown too late is
dropped, and an animator that fails logs once and stays quiet for the rest of the session.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from parley.pcm import OUTPUT_FRAME_SAMPLES, OUTPUT_RATE
from parley_runtime.audio.output import SentFrame
from parley_runtime.visuals.shapes import HoldThenEase, Pose, mouth_shapes, neutral_pose, smooth

log = logging.getLogger(__name__)

_MAX_RATE_HZ = OUTPUT_RATE / OUTPUT_FRAME_SAMPLES  # at most one event per frame


def visemes_event(t: float, pose: Pose) -> dict[str, Any]:
    """The `visemes` event: `t` in seconds of the session's outbound audio, shapes 0..1."""
    return {
        "type": "visemes",
        "t": round(t, 3),
        "shapes": {name: round(value, 3) for name, value in pose.items()},
    }


class VisemeAnimator:
    """Turns played frames into `visemes` events; register `on_frame` with the output track.

    `t` in each event is the audio clock: seconds of audio the track has sent since its first
    frame, at the end of the frame the pose was computed on (the RTP timestamp / 48 kHz, plus
    one frame). Frames that are `late` by more than `max_lag_ms` behind the track's schedule
    get no event: a stale pose is worse than a skipped one.
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        enabled: Callable[[], bool],
        rate_hz: float = 30.0,
        ease_ms: int = 150,
        clock: Callable[[], float] = time.monotonic,
        hold_ms: int = 100,
        max_lag_ms: int = 120,
    ) -> None:
        if not 0 < rate_hz <= _MAX_RATE_HZ:
            raise ValueError(f"rate_hz must be within (0, {_MAX_RATE_HZ:g}], got {rate_hz}")
        self._send = send
        self._enabled = enabled
        self._clock = clock
        self._interval = OUTPUT_RATE / rate_hz  # samples of audio between two events
        self._window = math.ceil(self._interval)  # samples analysed per event
        self._recent: deque[np.ndarray] = deque(
            maxlen=math.ceil(self._window / OUTPUT_FRAME_SAMPLES) + 1
        )
        self._easer = HoldThenEase(hold_ms, ease_ms)
        self._max_lag_s = max_lag_ms / 1000
        self._samples = 0  # the audio clock, in samples sent
        self._next_event = 0.0  # audio clock (samples) at which the next event is due
        self._origin = math.inf  # clock time at which the audio clock read 0
        self._shown: Pose | None = None  # the pose last sent; None: neutral and quiet
        self._shown_at = 0.0
        self._failed = False
        self.events_sent = 0
        self.late_dropped = 0

    def on_frame(self, frame: SentFrame) -> None:
        if self._failed:
            return
        try:
            self._on_frame(frame)
        except Exception:
            self._failed = True
            log.exception("visemes stopped for this session; the audio is unaffected")

    def _on_frame(self, frame: SentFrame) -> None:
        start = self._samples / OUTPUT_RATE
        self._samples += frame.pcm.size
        self._origin = min(self._origin, frame.at - start)
        self._recent.append(frame.pcm)
        now = self._samples / OUTPUT_RATE
        if frame.voiced:
            self._easer.keep(now)
        elif self._shown is None:
            return  # nothing playing, nothing showing
        if self._samples < self._next_event:
            return
        self._next_event += self._interval
        if self._next_event <= self._samples:  # after a quiet spell: restart the cadence
            self._next_event = self._samples + self._interval

        if not self._enabled():
            if self._shown is not None:
                self._emit(now, neutral_pose())
                self._shown = None
            return
        lag = self._clock() - (self._origin + start)
        if frame.late and lag > self._max_lag_s:
            self.late_dropped += 1
            return

        if frame.voiced:
            pcm = np.concatenate(self._recent)[-self._window :]
            previous = self._shown if self._shown is not None else neutral_pose()
            dt = now - self._shown_at if self._shown is not None else self._interval / OUTPUT_RATE
            pose = smooth(previous, mouth_shapes(pcm), dt)
            self._easer.show(pose, now)
            self._emit(now, pose)
            self._shown = pose
        else:
            pose = self._easer.pose_at(now)
            self._emit(now, pose)
            self._shown = None if self._easer.settled(now) else pose

    def _emit(self, now: float, pose: Pose) -> None:
        self._send(visemes_event(now, pose))
        self._shown_at = now
        self.events_sent += 1
