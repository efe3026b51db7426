"""The user's voices in `parley bench compare`: espeak-ng, several speakers and rates.

Parley's tests and other benches speak with Piper's `en_US-joe-medium`, the voice Parley's
endpointing was tuned against. A comparison spoken in that voice could flatter Parley, so this
one speaks with voices neither stack was built around: espeak-ng's formant synthesis (Debian's
`espeak-ng`, installed by `make system-deps`), several accents and voice variants, 140–190
words per minute. espeak-ng is deterministic: the same text, voice and rate give the same
samples, so both stacks hear exactly the same conversation.

The slow speakers (`--speakers slow`) are the people an early endpoint could cut off: 100–125
words per minute, longer gaps between words, and a hesitation in the middle of every question
("How many strings | does a guitar have?"), 350–600 ms of silence, shorter than the runtime's
full endpoint. None of them is in the rotation above.
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
from parley_bench.peer import voiced_span


class EspeakMissingError(RuntimeError):
    """espeak-ng is not installed."""


@dataclass(frozen=True)
class Speaker:
    voice: str  # an espeak-ng voice, optionally +variant: `espeak-ng --voices=en`, `+f2`
    wpm: int  # speaking rate, words per minute
    word_gap: int = 0  # espeak-ng's -g: extra silence between words, in 10 ms
    hesitation_ms: int = 0  # the silence where a line has a `|`

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


#: Slow speakers, each hesitating mid-question for its own `hesitation_ms`: the espeak-ng
#: voices on which Whisper tiny.en missed fewest words of the slow questions (3-9 of 81).
SLOW_SPEAKERS = (
    Speaker("en-us+m1", 110, word_gap=3, hesitation_ms=450),
    Speaker("en-gb-x-rp+m4", 105, word_gap=4, hesitation_ms=600),
    Speaker("en-us+f5", 120, word_gap=2, hesitation_ms=350),
    Speaker("en-us+grandpa", 100, word_gap=3, hesitation_ms=550),
    Speaker("en-us+m2", 115, word_gap=2, hesitation_ms=400),
    Speaker("en-us+m6", 125, word_gap=1, hesitation_ms=500),
)
HESITATION = "|"


def espeak_binary() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise EspeakMissingError(
            "espeak-ng is not installed: `make system-deps` as root, or `apt-get install espeak-ng`"
        )
    return found


@cache
def spoken(text: str, speaker: Speaker) -> np.ndarray:
    """`text` said by `speaker`, as 48 kHz mono int16 (what `ScriptedMicrophone.say` takes);
    each `|` in `text` is a hesitation of exactly `speaker.hesitation_ms` of silence. Cached: a
    conversation repeats its lines, and every stack hears the same samples."""
    parts = [_espeak(part.strip(), speaker) for part in text.split(HESITATION)]
    pause = np.zeros(OUTPUT_RATE * speaker.hesitation_ms // 1000, dtype=np.int16)
    pieces: list[np.ndarray] = []
    for index, part in enumerate(parts):
        first, last = voiced_span(part)
        start = first if index > 0 else 0  # the hesitation is all the silence there is
        end = last + 1 if index < len(parts) - 1 else len(part)
        pieces += [pause, part[start:end]] if index > 0 else [part[start:end]]
    resampled = np.concatenate(pieces)
    resampled.setflags(write=False)  # shared by every caller through the cache
    return resampled


def _espeak(text: str, speaker: Speaker) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="parley-espeak-") as folder:
        path = Path(folder) / "speech.wav"
        command = [espeak_binary(), "-v", speaker.voice, "-s", str(speaker.wpm)]
        if speaker.word_gap:
            command += ["-g", str(speaker.word_gap)]
        subprocess.run(
            [*command, "-w", str(path), text], check=True, capture_output=True, timeout=30
        )
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    resampler = Resampler(OUTPUT_RATE)
    return np.concatenate([resampler.pcm(pcm, rate), resampler.flush()])
