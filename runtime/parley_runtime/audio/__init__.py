"""Audio plumbing: PCM helpers, the inbound reader and the paced outbound track."""

from parley_runtime.audio.output import AgentAudioOutput, PlaybackSegment
from parley_runtime.audio.pacing import FramePacer, audio_frame
from parley_runtime.audio.pcm import (
    INPUT_RATE,
    OUTPUT_FRAME_SAMPLES,
    OUTPUT_RATE,
    Resampler,
    is_voiced,
    trim_leading_silence,
)

__all__ = [
    "INPUT_RATE",
    "OUTPUT_FRAME_SAMPLES",
    "OUTPUT_RATE",
    "AgentAudioOutput",
    "FramePacer",
    "PlaybackSegment",
    "Resampler",
    "audio_frame",
    "is_voiced",
    "trim_leading_silence",
]
