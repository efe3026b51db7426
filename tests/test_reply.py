"""A reply's speech, from the LLM's tokens (scripted, over a real socket) through real Piper to
the output track: a short first piece, and a seam inside a phrase that sounds like the gap
between two words rather than between two sentences."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from parley.pcm import is_voiced
from parley_runtime.agent.reply import Reply
from parley_runtime.audio import AgentAudioOutput
from parley_runtime.llm import ChatClient, ChatHistory
from parley_tts import PiperTTS
from tests.support.scripted_llm import ScriptedLLMServer

ANSWER = "A baby dog is called a puppy and it loves to play. Puppies sleep most of the day."


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperTTS]:
    tts = PiperTTS()
    yield tts
    tts.close()


@pytest.fixture
async def llm(scripted_llm: ScriptedLLMServer) -> AsyncIterator[ChatClient]:
    scripted_llm.script.answer = ANSWER
    client = ChatClient(scripted_llm.url, "scripted")
    yield client
    await client.aclose()
    scripted_llm.script.answer = type(scripted_llm.script)().answer


async def speak(
    llm: ChatClient, piper: PiperTTS, first_piece_words: int
) -> tuple[Reply, list[bool]]:
    """Run one committed reply; return it and, frame by frame, whether what it played was
    voiced."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def transcribe() -> str:
        return "What is a baby dog called?"

    output = AgentAudioOutput(clock=lambda: now[0], sleep=sleep)
    events: list[dict[str, Any]] = []
    reply = Reply(
        transcribe=transcribe,
        prefix="",
        history=ChatHistory("be brief"),
        llm=llm,
        tts=piper,
        voice=None,
        output=output,
        send=events.append,
        first_piece_words=first_piece_words,
    )
    reply.commit()
    await reply.wait_closed()
    assert reply.error is None
    voiced = []
    while output.pending:
        frame = await output.recv()
        voiced.append(is_voiced(frame.to_ndarray().reshape(-1)))
    return reply, voiced


def pieces(reply: Reply) -> list[str]:
    return [segment.text for segment in reply.segments]


def silent_frames_between(reply: Reply, voiced: list[bool], first: int) -> int:
    """Silent frames from the last voiced frame of segment `first` to the first voiced frame
    of the next one."""
    starts = np.cumsum([0] + [segment.frames for segment in reply.segments])
    before = voiced[starts[first] : starts[first + 1]]
    after = voiced[starts[first + 1] : starts[first + 2]]
    trailing = len(before) - 1 - max(i for i, v in enumerate(before) if v)
    leading = min(i for i, v in enumerate(after) if v)
    return trailing + leading


async def test_the_first_piece_is_short_and_its_seam_sounds_like_a_gap_between_words(
    llm: ChatClient, piper: PiperTTS
) -> None:
    reply, voiced = await speak(llm, piper, first_piece_words=5)
    assert pieces(reply) == [
        "A baby dog is called",
        "a puppy and it loves to play.",
        "Puppies sleep most of the day.",
    ]
    word_seam = silent_frames_between(reply, voiced, 0)
    sentence_seam = silent_frames_between(reply, voiced, 1)
    # Piper ends every piece with ~150 ms of silence and starts the next with ~50: kept at a
    # sentence end, cut to the gap between two words inside the phrase.
    assert word_seam <= 3
    assert sentence_seam >= 6
    assert reply.heard_text() == ANSWER


async def test_an_answer_that_starts_looping_ends_at_its_first_repeat(
    llm: ChatClient, piper: PiperTTS, scripted_llm: ScriptedLLMServer
) -> None:
    scripted_llm.script.answer = "The milk is called milk. It is called milk. It is called milk."
    reply, _ = await speak(llm, piper, first_piece_words=5)
    assert pieces(reply) == ["The milk is called milk.", "It is called milk."]
    assert reply.heard_text() == "The milk is called milk. It is called milk."


async def test_without_first_piece_words_the_first_piece_is_a_whole_sentence(
    llm: ChatClient, piper: PiperTTS
) -> None:
    reply, _ = await speak(llm, piper, first_piece_words=0)
    assert pieces(reply) == [
        "A baby dog is called a puppy and it loves to play.",
        "Puppies sleep most of the day.",
    ]
