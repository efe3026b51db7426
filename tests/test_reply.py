"""A reply's speech, from the LLM's tokens (scripted, over a real socket) through real Piper to
the output track: a short first piece, a seam inside a phrase that sounds like the gap
between two words rather than between two sentences, and later pieces voiced as playback
needs them."""

from __future__ import annotations

import asyncio
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


def fake_clock_output() -> AgentAudioOutput:
    """An output track whose frames leave as fast as they are asked for."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    return AgentAudioOutput(clock=lambda: now[0], sleep=sleep)


def reply_to(llm: ChatClient, piper: PiperTTS, output: AgentAudioOutput, **options: Any) -> Reply:
    async def transcribe() -> str:
        return "What is a baby dog called?"

    events: list[dict[str, Any]] = []
    return Reply(
        transcribe=transcribe,
        prefix="",
        history=ChatHistory("be brief"),
        llm=llm,
        tts=piper,
        voice=None,
        output=output,
        send=events.append,
        **options,
    )


async def speak(
    llm: ChatClient, piper: PiperTTS, first_piece_words: int
) -> tuple[Reply, list[bool]]:
    """Run one committed reply; return it and, frame by frame, whether what it played was
    voiced."""
    output = fake_clock_output()
    reply = reply_to(llm, piper, output, first_piece_words=first_piece_words)
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


async def test_later_pieces_are_voiced_as_playback_needs_them(
    llm: ChatClient, piper: PiperTTS
) -> None:
    output = fake_clock_output()
    reply = reply_to(llm, piper, output, first_piece_words=5, tts_lead_ms=500)
    reply.commit()
    await reply.ready
    await asyncio.sleep(1)  # the LLM and Piper would have voiced the whole answer by now
    assert pieces(reply) == ["A baby dog is called"]
    assert output.queued_ms > 500

    for _ in range(10_000):  # play it out
        if reply.finished and not output.pending:
            break
        await output.recv()
        await asyncio.sleep(0.001)
    assert reply.finished and reply.error is None
    assert pieces(reply) == [
        "A baby dog is called",
        "a puppy and it loves to play.",
        "Puppies sleep most of the day.",
    ]
    assert reply.heard_text() == ANSWER
