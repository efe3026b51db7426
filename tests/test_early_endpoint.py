"""The early endpoint: a turn whose transcript sounds finished commits at a short silence once
its answer's first audio is ready; one whose words hang, or whose answer is not ready, waits
for the full endpoint; speech right after an early commit counts against the early silence
only, and as a hesitation no later turn ends before; a user who went on after a pause is not
answered at a shorter one; speech well into an answer is an interruption, not a cut-off.

Unit level with the real `Conversation` and `Reply`: a loudness VAD, an ASR that answers with a
given text, an LLM that answers when the test lets it, and a TTS that gives one chunk of audio.
Nothing drains the agent's output, so a committed turn stays THINKING with its audio pending.
Audio time is what counts; the test waits only for the doubles' answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import cast

import numpy as np
import pytest

from parley_runtime import RuntimeSettings
from parley_runtime.agent import Conversation, Services
from parley_runtime.asr import SpeechRecognizer
from parley_runtime.audio import AgentAudioOutput
from parley_runtime.events import EventChannel
from parley_runtime.llm import ChatClient
from parley_runtime.turns import ConversationState
from parley_runtime.vad import SileroVAD
from parley_tts import TTSService
from tests.test_concurrency import LoudnessVAD, frames16

EARLY_MS = 256
ENDPOINT_MS = 704


class ScriptedASR:
    """Answers every transcription with `text`."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def transcribe(self, pcm: np.ndarray, partial: bool = False) -> str:
        await asyncio.sleep(0)
        return self.text


class GatedASR(ScriptedASR):
    """Answers with `text` once `gate` is set."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.gate = asyncio.Event()

    async def transcribe(self, pcm: np.ndarray, partial: bool = False) -> str:
        await self.gate.wait()
        return self.text


class GatedLLM:
    """Streams a fixed answer once `gate` is set (at once when it is set already)."""

    max_tokens = 60

    def __init__(self, open_gate: bool = True) -> None:
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()

    async def stream(
        self,
        messages: list[dict[str, str]],
        max_tokens: int | None = None,
        slot: int | None = None,
    ) -> AsyncIterator[str]:
        await self.gate.wait()
        for delta in ("It will", " be sunny", " all day long."):
            yield delta


class ToneTTS(TTSService):
    """One loud chunk for every sentence."""

    sample_rate = 16_000
    name = "tone"

    async def synthesize(
        self, text: str, voice: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        yield np.full(self.sample_rate // 5, 3000, dtype=np.int16)


@contextlib.asynccontextmanager
async def conversation_with(asr: ScriptedASR, llm: GatedLLM) -> AsyncIterator[Conversation]:
    services = Services(
        asr=cast(SpeechRecognizer, asr),
        vad=cast(SileroVAD, LoudnessVAD()),
        tts=ToneTTS(),
        llm=cast(ChatClient, llm),
    )
    settings = RuntimeSettings(
        early_endpoint_ms=EARLY_MS,
        endpoint_initial_ms=ENDPOINT_MS,
        speculate_after_ms=160,
        llm_prefill=False,
    )
    conversation = Conversation(services, settings, AgentAudioOutput(), EventChannel())
    conversation.start()
    try:
        yield conversation
    finally:
        llm.gate.set()
        await conversation.close()


def feed(conversation: Conversation, frames: Iterator[np.ndarray]) -> None:
    for pcm in frames:
        conversation.feed(pcm)


async def settle() -> None:
    """Let the doubles' answers reach the conversation."""
    for _ in range(20):
        await asyncio.sleep(0)


async def speak_then_pause(conversation: Conversation) -> None:
    feed(conversation, frames16(800, loud=True))
    feed(conversation, frames16(200, loud=False))  # the pause: a speculative reply
    await settle()


async def silence_until_commit(conversation: Conversation, limit_ms: int = 2000) -> int:
    """Feed silence 20 ms at a time until a turn commits; the silence it took in all (counting
    the 200 ms pause already fed)."""
    silence_ms, turns = 200, conversation.turns
    while conversation.turns == turns and silence_ms < limit_ms:
        feed(conversation, frames16(20, loud=False))
        await settle()
        silence_ms += 20
    return silence_ms


async def test_a_finished_question_with_its_answer_ready_commits_at_the_early_silence() -> None:
    asr = ScriptedASR("Is it going to rain tomorrow?")
    async with conversation_with(asr, GatedLLM()) as conversation:
        await speak_then_pause(conversation)
        took = await silence_until_commit(conversation)
        assert EARLY_MS <= took < ENDPOINT_MS
        assert conversation.state is ConversationState.THINKING


@pytest.mark.parametrize("words", ["What is the capital of", "I was thinking about the"])
async def test_words_left_hanging_wait_for_the_full_endpoint(words: str) -> None:
    async with conversation_with(ScriptedASR(words), GatedLLM()) as conversation:
        await speak_then_pause(conversation)
        assert await silence_until_commit(conversation) >= ENDPOINT_MS


async def test_an_answer_not_ready_waits_and_speech_resuming_drops_it_uncommitted() -> None:
    llm = GatedLLM(open_gate=False)
    async with conversation_with(ScriptedASR("Is it going to rain?"), llm) as conversation:
        await speak_then_pause(conversation)
        feed(conversation, frames16(300, loud=False))  # 500 ms of silence: past the early one
        await settle()
        assert conversation.turns == 0 and conversation.reply is not None

        feed(conversation, frames16(300, loud=True))  # the user goes on

        assert conversation.turns == 0 and conversation.reply is None
        assert conversation.state is ConversationState.LISTENING


async def test_speech_right_after_an_early_commit_widens_only_the_early_silence() -> None:
    asr = ScriptedASR("Is it going to rain.")
    async with conversation_with(asr, GatedLLM()) as conversation:
        assert conversation.early_silence is not None
        await speak_then_pause(conversation)
        await silence_until_commit(conversation)
        assert conversation.turns == 1

        feed(conversation, frames16(300, loud=True))  # the user was not done

        assert conversation.early_silence.current_ms == EARLY_MS + 150
        assert conversation.silence.current_ms == ENDPOINT_MS


async def test_an_interruption_a_moment_into_an_early_answer_is_not_a_cut_off() -> None:
    asr = ScriptedASR("Is it going to rain.")
    async with conversation_with(asr, GatedLLM()) as conversation:
        assert conversation.early_silence is not None
        await speak_then_pause(conversation)
        silence_ms = await silence_until_commit(conversation)
        # The answer plays; the user speaks up 1 s after their own last word.
        feed(conversation, frames16(1000 - silence_ms + 40, loud=False))
        feed(conversation, frames16(300, loud=True))

        assert conversation.early_silence.current_ms == EARLY_MS


async def test_a_cut_off_is_remembered_as_a_hesitation_the_next_turn_outlasts() -> None:
    asr = ScriptedASR("Is it going to rain.")
    async with conversation_with(asr, GatedLLM()) as conversation:
        assert conversation.early_silence is not None
        await speak_then_pause(conversation)
        cut_at = await silence_until_commit(conversation)
        feed(conversation, frames16(300, loud=True))  # the user was not done
        pause_ms, sounded_finished = conversation.hesitations.pauses[-1]
        assert pause_ms >= cut_at and sounded_finished
        floor_ms = conversation.hesitations.early_floor_ms
        assert floor_ms > conversation.early_silence.current_ms

        feed(conversation, frames16(500, loud=True))  # the rest of the question
        feed(conversation, frames16(200, loud=False))
        await settle()
        assert floor_ms <= await silence_until_commit(conversation) < ENDPOINT_MS
        assert conversation.turns == 2


async def test_a_pause_the_user_went_on_after_holds_off_the_early_end() -> None:
    llm = GatedLLM(open_gate=False)
    async with conversation_with(ScriptedASR("What is the biggest?"), llm) as conversation:
        feed(conversation, frames16(800, loud=True))
        feed(conversation, frames16(300, loud=False))  # a hesitation; no answer ready yet
        await settle()
        feed(conversation, frames16(600, loud=True))  # ... and the user goes on
        assert conversation.turns == 0
        assert conversation.hesitations.pauses[-1] == (288, True)  # the VAD's windows of it
        llm.gate.set()

        feed(conversation, frames16(200, loud=False))
        await settle()
        took = await silence_until_commit(conversation)
        assert EARLY_MS + 150 < conversation.hesitations.early_floor_ms <= took < ENDPOINT_MS


async def test_speech_well_into_an_answer_after_the_full_endpoint_is_not_a_cut_off() -> None:
    async with conversation_with(ScriptedASR("What is the capital of"), GatedLLM()) as conversation:
        await speak_then_pause(conversation)  # the words hang: the full endpoint
        assert await silence_until_commit(conversation) >= ENDPOINT_MS
        feed(conversation, frames16(800, loud=False))  # 0.8 s into the answer
        feed(conversation, frames16(300, loud=True))
        assert conversation.silence.current_ms == ENDPOINT_MS
        assert not conversation.hesitations.pauses


async def test_a_hesitation_is_judged_by_its_words_even_when_they_are_transcribed_late() -> None:
    asr = GatedASR("What do you drink?")
    async with conversation_with(asr, GatedLLM()) as conversation:
        feed(conversation, frames16(800, loud=True))
        feed(conversation, frames16(300, loud=False))  # a hesitation; the words not yet heard
        await settle()
        feed(conversation, frames16(600, loud=True))  # the user goes on
        await settle()
        assert conversation.reply is None and not conversation.hesitations.pauses

        asr.gate.set()  # the dropped speculation's transcript arrives
        await settle()
        assert conversation.hesitations.pauses[-1] == (288, True)
        assert conversation.hesitations.early_floor_ms > EARLY_MS + 150
