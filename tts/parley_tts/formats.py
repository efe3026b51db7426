"""Response formats, encoded as the audio is produced, so every format streams.

- `pcm`: raw 16-bit little-endian mono at 24 kHz (the rate is also in `X-Sample-Rate`).
- `wav`: the same samples behind a streaming WAV header whose sizes are set to the maximum,
  as streaming WAV writers do, because the length is not known up front.
- `mp3`, `opus` (in Ogg), `aac` (in ADTS) and `flac`: encoded and muxed by PyAV into a sink
  that cannot seek, so each muxer writes a stream-friendly form (no MP3 Xing frame, no FLAC
  header rewritten at the end), and what it has written leaves after every chunk of audio.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

import av
import numpy as np
from av.audio.stream import AudioStream

from parley.pcm import SPEECH_RATE


@dataclass(frozen=True)
class AudioFormat:
    media_type: str
    container: str = ""  # a PyAV (FFmpeg) muxer; empty for raw samples
    codec: str = ""
    bit_rate: int | None = None
    options: dict[str, str] = field(default_factory=dict)


ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
FORMATS: dict[ResponseFormat, AudioFormat] = {
    "mp3": AudioFormat("audio/mpeg", "mp3", "libmp3lame", 64_000),
    # Ogg pages of at most 100 ms, not FFmpeg's 1 s, so audio leaves as it is encoded.
    "opus": AudioFormat("audio/opus", "ogg", "libopus", 32_000, {"page_duration": "100000"}),
    "aac": AudioFormat("audio/aac", "adts", "aac", 64_000),
    "flac": AudioFormat("audio/flac", "flac", "flac"),
    "wav": AudioFormat("audio/wav"),
    "pcm": AudioFormat("audio/pcm"),
}


def streaming_wav_header(rate: int = SPEECH_RATE) -> bytes:
    unknown = 0xFFFFFFFF
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        unknown,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        unknown - 36,
    )


class Encoder(Protocol):
    """Turns int16 mono samples at `SPEECH_RATE` into the bytes of one response."""

    def start(self) -> bytes: ...

    def encode(self, pcm: np.ndarray) -> bytes: ...

    def finish(self) -> bytes: ...

    def close(self) -> None: ...


class RawEncoder:
    """`pcm`, and `wav` with its header first."""

    def __init__(self, header: bytes = b"") -> None:
        self._header = header

    def start(self) -> bytes:
        return self._header

    def encode(self, pcm: np.ndarray) -> bytes:
        return pcm.astype("<i2", copy=False).tobytes()

    def finish(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _Sink:
    """A write-only file for PyAV: it cannot seek, so muxers write as they go."""

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, data: bytes) -> int:
        self._data += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._data)
        self._data.clear()
        return data


class AVEncoder:
    """A codec in a container, through PyAV. The encoder re-chunks to its frame size, so what
    a call returns may lag its input by a frame or so; `finish` flushes the rest."""

    def __init__(self, spec: AudioFormat, rate: int = SPEECH_RATE) -> None:
        self._rate = rate
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=spec.container, options=spec.options)
        stream = self._container.add_stream(spec.codec, rate=rate, layout="mono")
        self._stream = cast(AudioStream, stream)
        if spec.bit_rate:
            self._stream.bit_rate = spec.bit_rate
        self._open = True

    def start(self) -> bytes:
        return b""

    def encode(self, pcm: np.ndarray) -> bytes:
        if pcm.size == 0:
            return b""
        samples = pcm.astype(np.int16, copy=False).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self._rate
        self._container.mux(self._stream.encode(frame))
        return self._sink.take()

    def finish(self) -> bytes:
        self._container.mux(self._stream.encode(None))
        self.close()
        return self._sink.take()

    def close(self) -> None:
        """Close the container (writing its trailer); after a failure, nobody reads it."""
        if self._open:
            self._open = False
            self._container.close()


def make_encoder(name: ResponseFormat) -> Encoder:
    spec = FORMATS[name]
    if spec.container:
        return AVEncoder(spec)
    return RawEncoder(streaming_wav_header() if name == "wav" else b"")
