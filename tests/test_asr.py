"""Speech recognition: the fitted encoder window (pure sizing, then real faster-whisper) hears
as well as Whisper's full 30 s window, short phrases do not loop, and silence stays silent."""

from __future__ import annotations

import re

import numpy as np
import pytest

from parley.pcm import INPUT_RATE, Resampler
from parley_bench.speech import silence, speech
from parley_runtime.asr import (
    FULL_WINDOW_FRAMES,
    SpeechRecognizer,
    encoder_frames,
    repeats_itself,
)
from tests.support.runtime_host import RuntimeHost

QUESTIONS = [
    "How many wheels does a bicycle have?",
    "Please tell me what a caterpillar turns into.",
    "Could you name a few animals that live in the ocean?",
    "How do airplanes stay up in the sky?",
]


@pytest.mark.parametrize(
    ("speech_frames", "window"),
    [(1, 1000), (850, 1000), (900, 1000), (901, 1100), (1250, 1400), (2899, 3000), (9000, 3000)],
)
def test_the_window_is_the_speech_and_a_second_in_whole_seconds_from_10_to_30(
    speech_frames: int, window: int
) -> None:
    assert encoder_frames(speech_frames) == window
    assert encoder_frames(speech_frames) <= FULL_WINDOW_FRAMES


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def at_16k(text: str) -> np.ndarray:
    pcm = np.concatenate([silence(300), await speech(text), silence(300)])
    resampler = Resampler(INPUT_RATE)
    return np.concatenate([resampler.pcm(pcm, 48_000), resampler.flush()])


@pytest.fixture(scope="module")
def full_window() -> SpeechRecognizer:
    return SpeechRecognizer(window="full")


def errors(heard: str, said: str) -> int:
    """Word-level edit distance."""
    a, b = words(heard), words(said)
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


async def test_the_fitted_window_hears_as_well_as_the_full_one(
    runtime_host: RuntimeHost, full_window: SpeechRecognizer
) -> None:
    fitted = runtime_host.models.asr
    assert fitted.window == "fit"
    fitted_errors = full_errors = 0
    for question in QUESTIONS:
        audio = await at_16k(question)
        fitted_errors += errors(await fitted.transcribe(audio), question)
        full_errors += errors(await full_window.transcribe(audio), question)
    assert fitted_errors <= full_errors + 1
    assert fitted_errors <= 3  # of 34 words (Piper's speech varies from run to run)


@pytest.mark.parametrize("phrase", ["How many legs", "Can you tell me", "What is the capital"])
async def test_a_short_phrase_is_heard_once(runtime_host: RuntimeHost, phrase: str) -> None:
    """Whisper over a window much shorter than it was trained on loops on short phrases
    ("How many legs? How many legs? ..."): the window and the repetition check prevent it."""
    heard = await runtime_host.models.asr.transcribe(await at_16k(phrase))
    assert not repeats_itself(heard) and len(words(heard)) <= len(words(phrase)) + 1, heard


@pytest.mark.parametrize(
    ("text", "looping"),
    [
        ("How many legs? How many legs?", True),
        ("Can you tell me? Can you tell me? Can you", True),
        ("It is very very cold.", False),
        ("Tell me a story about a dog and a cat.", False),
    ],
)
def test_a_loop_is_a_phrase_said_twice_in_a_row(text: str, looping: bool) -> None:
    assert repeats_itself(text) is looping


async def test_silence_and_noise_are_no_words(runtime_host: RuntimeHost) -> None:
    fitted = runtime_host.models.asr
    assert await fitted.transcribe(np.zeros(2 * INPUT_RATE, dtype=np.int16)) == ""
    hiss = np.random.default_rng(7).normal(0, 30, 2 * INPUT_RATE).astype(np.int16)
    assert words(await fitted.transcribe(hiss)) == []


async def test_more_than_30_seconds_takes_whispers_own_windows(
    runtime_host: RuntimeHost,
) -> None:
    """Past one window the fitted path cannot hold the audio: faster-whisper's seeks do."""
    question = await at_16k(QUESTIONS[0])
    long = np.concatenate([np.zeros(31 * INPUT_RATE, dtype=np.int16), question])
    assert "bicycle" in words(await runtime_host.models.asr.transcribe(long))
