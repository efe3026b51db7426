"""Speech recognition with faster-whisper (CTranslate2), off the event loop.

Whisper is trained on 30 s windows, and faster-whisper pads every call to one, so the encoder
costs the same for a two-second question as for thirty seconds of speech: about 300 ms of the
voice-to-voice time on two cores. With `window="fit"` (the default) the encoder sees the
utterance and the silence after it, in whole seconds and at least 10 s, the way whisper.cpp's
`audio_ctx` does: three to five times faster on questions, with the same words on held-out
speech (docs/benchmarks.md). A window much shorter than 10 s makes Whisper loop on short
phrases ("How many legs? How many legs? ..."); a transcript that still repeats itself is
transcribed again over the full window. `window="full"` keeps faster-whisper's own 30 s path.
One worker thread by default keeps a 2-core machine from oversubscribing itself; it serves
the final transcripts, which answer turns, before the partial ones, which are only shown.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from parley.pcm import INPUT_RATE
from parley_runtime.models import whisper_model_dir
from parley_runtime.priority_pool import BACKGROUND, URGENT, PriorityThreadPool

AsrWindow = Literal["fit", "full"]

#: Whisper's mel frames: 100 a second, 3000 in its 30 s window.
FRAMES_PER_S = 100
FULL_WINDOW_FRAMES = 30 * FRAMES_PER_S
#: Silence the encoder sees after the speech: Whisper ends a transcript better with some.
_TAIL_FRAMES = FRAMES_PER_S
#: Below this, Whisper tends to repeat short phrases until max_length.
MIN_WINDOW_FRAMES = 10 * FRAMES_PER_S
#: Tokens a second of speech may need, generously, and the prompt's; a bound on a runaway decode.
_TOKENS_PER_S = 10
_PROMPT_TOKENS = 8
#: faster-whisper's defaults for dropping a window as silence (no_speech and log-prob).
_NO_SPEECH_THRESHOLD = 0.6
_LOG_PROB_THRESHOLD = -1.0


def encoder_frames(speech_frames: int) -> int:
    """The encoder window for `speech_frames` mel frames: those plus `_TAIL_FRAMES`, rounded
    up to whole seconds, at least `MIN_WINDOW_FRAMES`, at most Whisper's 30 s."""
    wanted = max(MIN_WINDOW_FRAMES, speech_frames + _TAIL_FRAMES)
    return min(FULL_WINDOW_FRAMES, math.ceil(wanted / FRAMES_PER_S) * FRAMES_PER_S)


def repeats_itself(text: str) -> bool:
    """A phrase of two words or more said twice in a row: Whisper looping, not a person."""
    words = text.lower().split()
    for size in range(2, len(words) // 2 + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return True
    return False


class SpeechRecognizer:
    def __init__(
        self,
        model: str = "tiny.en",
        device: str = "cpu",
        compute_type: str = "int8",
        threads: int = 2,
        workers: int = 1,
        window: AsrWindow = "fit",
    ) -> None:
        self.model_name = model
        self.window = window
        self._model = WhisperModel(
            str(whisper_model_dir(model)),
            device=device,
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=workers,
        )
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language="en",
        )
        self._prompt = self._model.get_prompt(self._tokenizer, [], without_timestamps=True)
        self._suppressed = list(get_suppressed_tokens(self._tokenizer, (-1,)))
        self._pool = PriorityThreadPool(workers, name="asr")

    def transcribe_sync(self, pcm: np.ndarray) -> str:
        audio = pcm.astype(np.float32) / 32768.0
        if self.window == "fit" and len(audio) <= FULL_WINDOW_FRAMES * INPUT_RATE // FRAMES_PER_S:
            text = self._transcribe_fitted(audio)
            if not repeats_itself(text):
                return text
        segments, _ = self._model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def _transcribe_fitted(self, audio: np.ndarray) -> str:
        """One greedy decode over a window fitted to `audio` (see the module docstring)."""
        features = self._model.feature_extractor(audio)
        frames = encoder_frames(features.shape[-1])
        encoded = self._model.encode(pad_or_trim(features, frames))
        (result,) = self._model.model.generate(
            encoded,
            [self._prompt],
            beam_size=1,
            max_length=_PROMPT_TOKENS + _TOKENS_PER_S * frames // FRAMES_PER_S,
            suppress_blank=True,
            suppress_tokens=self._suppressed,
            return_scores=True,
            return_no_speech_prob=True,
        )
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        # The mean log-probability as faster-whisper computes it (length penalty 1).
        n = len(result.sequences_ids[0])
        mean_log_prob = result.scores[0] * n / (n + 1)
        if result.no_speech_prob > _NO_SPEECH_THRESHOLD and mean_log_prob < _LOG_PROB_THRESHOLD:
            return ""
        text = str(self._tokenizer.decode(tokens)).strip()
        # A window of silence or noise can decode to punctuation alone (". . ."): no words.
        return text if any(c.isalnum() for c in text) else ""

    async def transcribe(self, pcm: np.ndarray, partial: bool = False) -> str:
        """Transcribe 16 kHz mono int16 audio; a `partial` transcript waits for the others."""
        if len(pcm) < INPUT_RATE // 10:
            return ""
        return await self._pool.run(
            BACKGROUND if partial else URGENT, lambda: self.transcribe_sync(pcm)
        )

    def close(self) -> None:
        self._pool.close()
