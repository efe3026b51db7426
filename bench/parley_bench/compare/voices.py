"""The user's voices in `parley bench compare`: espeak-ng, several speakers and rates.

Parley's tests and other benches speak with Piper's `en_US-joe-medium`, the voice Parley's
endpointing was tuned against. A comparison spoken in that voice could flatter Parley, so this
one speaks with voices neither stack was built around: espeak-ng's formant synthesis (Debian's
`espeak-ng`, installed by `make system-deps`), several accents and voice variants, 140–190
words per minute. espeak-ng is deterministic: the same text, voice and rate give the same
samples, so both stacks hear exactly the same conversation.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from parley.pcm import OUTPUT_RATE, Resampler


class EspeakMissingError(RuntimeError):
    """espeak-ng is not installed."""


@dataclass(frozen=True)
class Speaker:
    voice: str  # an espeak-ng voice, optionally +variant: `espeak-ng --voices=en`, `+f2`
    wpm: int  # speaking rate, words per minute

    def __str__(self) -> str:
        return f"{self.voice}@{self.wpm}"


#: The rotation: accents (US, RP, Caribbean, Lancaster, southern British), male and female
#: variants, slow to fast. Only espeak-ng's own voices (the mbrola ones need another package);
#: the Scottish and New York voices were left out: Whisper tiny.en misheard a third of their
#: words, which would test the ASR rather than the turn-taking.
SPEAKERS = (
    Speaker("en-us", 170),
    Speaker("en-gb-x-rp+f2", 150),
    Speaker("en-us+m3", 185),
    Speaker("en-us+f4", 160),
    Speaker("en-029+m5", 140),
    Speaker("en-us+f3", 190),
    Speaker("en-gb-x-gbclan+m1", 165),
    Speaker("en-gb+f5", 155),
)


def espeak_binary() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise EspeakMissingError(
            "espeak-ng is not installed: `make system-deps` as root, or `apt-get install espeak-ng`"
        )
    return found


@cache
def spoken(text: str, speaker: Speaker) -> np.ndarray:
    """`text` said by `speaker`, as 48 kHz mono int16 (what `ScriptedMicrophone.say` takes).
    Cached: a conversation repeats its lines, and every stack hears the same samples."""
    with tempfile.TemporaryDirectory(prefix="parley-espeak-") as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(
            [espeak_binary(), "-v", speaker.voice, "-s", str(speaker.wpm), "-w", str(path), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    resampler = Resampler(OUTPUT_RATE)
    resampled = np.concatenate([resampler.pcm(pcm, rate), resampler.flush()])
    resampled.setflags(write=False)  # shared by every caller through the cache
    return resampled
