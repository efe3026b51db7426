"""The runtime's audio tracks: the paced outbound track and its pacer. PCM conventions
(rates, resampling, loudness) are shared with the TTS server and live in `parley.pcm`."""

from parley_runtime.audio.output import AgentAudioOutput, PlaybackSegment, SentFrame
from parley_runtime.audio.pacing import FramePacer, audio_frame

__all__ = ["AgentAudioOutput", "FramePacer", "PlaybackSegment", "SentFrame", "audio_frame"]
