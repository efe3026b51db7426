"""Response formats. `pcm`: raw 16-bit little-endian mono at 24 kHz (the rate is also in the
`X-Sample-Rate` header). `wav`: the same samples behind a streaming WAV header whose sizes are
set to the maximum, as streaming WAV writers do, because the length is not known up front."""

from __future__ import annotations

import struct

from parley.pcm import SPEECH_RATE

MEDIA_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav"}


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
