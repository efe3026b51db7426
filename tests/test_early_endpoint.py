"""The early endpoint: a turn whose transcript sounds finished commits at a short silence;
one that does not waits for the full endpoint; and speech after an early commit, before the
answer is heard, takes the commit back (the user was not done): one utterance goes on, and
the next early commit waits longer.

Unit level with the real `Conversation`: a loudness VAD, an ASR that answers with a given
text, and an LLM server that accepts the request and never answers (so a committed turn stays
THINKING while the test speaks again). Audio time is what counts; the test waits only for the
scripted ASR's answer to reach the conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import cast

import numpy as np
import pytest

from parley.pcm import INPUT_RATE
from parley_runtime import RuntimeSettings
from parley_runtime.agent import Conversation, Services
from parley_runtime.asr import SpeechRecognizer
from parley_runtime.audio import AgentAudioOutput
from parley_runtime.events import EventChannel
from parley_runtime.llm import ChatClient
from parley_runtime.turns import ConversationState
from parley_runtime.vad import SileroVAD
from parley_tts import HTTPSpeechClient
from tests.test_concurrency import UNUSED_URL, LoudnessVAD, frames16

EARLY_MS = 256
ENDPOINT_MS = 704


class ScriptedASR:
    """Answers every transcription with the next of `texts` (the last one again when they
    run out), and remembers what it was asked."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.heard_ms: list[float] = []  # the length of each audio it was given

    async def transcribe(self, pcm: np.ndarray) -> str:
        await asyncio.sleep(0)
        text = self.texts[min(len(self.heard_ms), len(self.texts) - 1)]
        self.heard_ms.append(len(pcm) * 1000 / INPUT_RATE)
        return text


@contextlib.asynccontextmanager
async def silent_llm() -> AsyncIterator[str]:
    """An OpenAI-compatible URL whose server reads the request and never answers."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def conversation_with(asr: ScriptedASR) -> AsyncIterator[Conversation]:
    async with silent_llm() as url:
        llm = ChatClient(url, "unused")
        tts = HTTPSpeechClient(UNUSED_URL)
        services = Services(
            asr=cast(SpeechRecognizer, asr),
            vad=cast(SileroVAD, LoudnessVAD()),
            tts=tts,
            llm=llm,
        )
        settings = RuntimeSettings(
            early_endpoint_ms=EARLY_MS,
            endpoint_initial_ms=ENDPOINT_MS,
            speculate_after_ms=160,
        )
        conversation = Conversation(services, settings, AgentAudioOutput(), EventChannel())
        conversation.start()
        try:
            yield conversation
        finally:
            await conversation.close()
            await llm.aclose()
            await tts.aclose()


def feed(conversation: Conversation, frames: Iterator[np.ndarray]) -> None:
    for pcm in frames:
        conversation.feed(pcm)


async def transcribed(conversation: Conversation) -> None:
    """Let the speculative reply's transcript reach the conversation."""
    assert conversation.reply is not None
    await asyncio.wait_for(asyncio.shield(conversation.reply.transcript), 5)
    await asyncio.sleep(0)


async def silence_until_commit(conversation: Conversation, limit_ms: int = 2000) -> int:
    """Feed silence 20 ms at a time until the turn commits; the silence it took in all."""
    silence_ms = 200
    while conversation.turns == 0 and silence_ms < limit_ms:
        feed(conversation, frames16(20, loud=False))
        silence_ms += 20
    return silence_ms


async def test_a_finished_question_commits_at_the_early_silence() -> None:
    async with conversation_with(ScriptedASR("Is it going to rain tomorrow?")) as conversation:
        feed(conversation, frames16(800, loud=True))
        feed(conversation, frames16(200, loud=False))  # the pause: a speculative reply
        await transcribed(conversation)
        took = await silence_until_commit(conversation)
        assert EARLY_MS <= took < ENDPOINT_MS
        assert conversation.state is ConversationState.THINKING


@pytest.mark.parametrize("words", ["What is the capital of", "I was thinking about the"])
async def test_words_left_hanging_wait_for_the_full_endpoint(words: str) -> None:
    async with conversation_with(ScriptedASR(words)) as conversation:
        feed(conversation, frames16(800, loud=True))
        feed(conversation, frames16(200, loud=False))
        await transcribed(conversation)
        assert await silence_until_commit(conversation) >= ENDPOINT_MS


async def test_speech_before_the_answer_is_heard_takes_an_early_commit_back() -> None:
    asr = ScriptedASR("Is it going to rain.", "Is it going to rain tomorrow in Paris?")
    async with conversation_with(asr) as conversation:
        assert conversation.early_silence is not None
        feed(conversation, frames16(800, loud=True))
        feed(conversation, frames16(200, loud=False))
        await transcribed(conversation)
        await silence_until_commit(conversation)
        committed = conversation.reply
        assert committed is not None and committed.committed and conversation.turns == 1

        feed(conversation, frames16(400, loud=True))  # the user was not done

        assert committed.first_audio.cancelled()  # dropped before a word of it was heard
        assert conversation.reply is None and conversation.state is ConversationState.LISTENING
        assert conversation.turns == 0
        assert conversation.early_silence.current_ms == EARLY_MS + 150
        assert conversation.silence.current_ms == ENDPOINT_MS  # the full endpoint is kept

        # One utterance goes on: the next transcription hears the first part too.
        feed(conversation, frames16(200, loud=False))
        await transcribed(conversation)
        assert conversation.reply is not None
        assert conversation.reply.user_text == "Is it going to rain tomorrow in Paris?"
        first, second = asr.heard_ms
        assert second >= first + 400
