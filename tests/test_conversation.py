"""End to end with real parts: an aiortc peer speaks synthesized questions to the runtime
(Silero VAD, faster-whisper, llama.cpp + SmolLM2, Piper) and listens to the spoken answers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from parley.pcm import INPUT_RATE, OUTPUT_RATE, Resampler
from parley_bench.peer import Peer
from parley_bench.speech import silence, speech
from tests.support.runtime_host import RunningApp, RuntimeHost

pytestmark = pytest.mark.e2e


@pytest.fixture
async def peer(runtime: RunningApp) -> AsyncIterator[Peer]:
    peer = Peer(runtime.url)
    await peer.connect()
    await peer.wait_state("listening", 10)
    yield peer
    await peer.close()


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z']+", text.lower()) if len(w) >= 3}


def transcribe(host: RuntimeHost, pcm48: np.ndarray) -> str:
    resampler = Resampler(INPUT_RATE)
    pcm16 = np.concatenate([resampler.pcm(pcm48, OUTPUT_RATE), resampler.flush()])
    return host.models.asr.transcribe_sync(pcm16)


async def ask(peer: Peer, question: str, timeout: float = 30) -> tuple[float, float]:
    """Speak `question`; wait for the spoken answer to finish. Returns (end of question,
    first answer audio)."""
    utterance = peer.mic.say(np.concatenate([await speech(question), silence(200)]))
    asked = await utterance.finished
    first_audio = await peer.agent.wait_voiced_after(asked, timeout)
    await peer.wait_for(lambda e: e["type"] == "response" and e["final"], timeout, after=asked)
    await peer.wait_state("listening", timeout, after=first_audio)
    await peer.agent.wait_quiet(0.5, timeout)
    return asked, first_audio


async def test_spoken_question_gets_a_spoken_answer(peer: Peer, runtime_host: RuntimeHost) -> None:
    asked, first_audio = await ask(peer, "How many legs does a spider have?")
    assert first_audio > asked
    assert peer.states() == ["listening", "thinking", "speaking", "listening"]

    finals = [e for _, e in peer.events if e["type"] == "transcript" and e["final"]]
    assert len(finals) == 1 and "spider" in finals[0]["text"].lower()
    said = next(e["text"] for _, e in peer.events if e["type"] == "response" and e["final"])

    heard = transcribe(runtime_host, peer.agent.audio(since=asked))
    assert len(words(heard)) >= 2, f"no words in the agent's audio: {heard!r}"
    assert words(heard) & words(said), f"audio {heard!r} does not match the reply {said!r}"

    metrics = next(e for _, e in peer.events if e["type"] == "metrics")
    assert metrics["turn"] == 1 and metrics["ttfa_ms"] >= 0 and metrics["asr_ms"] > 0


async def test_barge_in_stops_the_agent_and_the_next_question_is_answered(
    peer: Peer, runtime: RunningApp
) -> None:
    story = np.concatenate(
        [await speech("Tell me a long story about a brave sailor."), silence(200)]
    )
    asked = await peer.mic.say(story).finished
    speaking_at = await peer.wait_state("speaking", 30, after=asked)
    first_audio = await peer.agent.wait_voiced_after(asked, 30)
    await peer.agent.wait_voiced_after(first_audio + 0.6, 30)  # well into the answer

    interruption = peer.mic.say(
        np.concatenate([await speech("Stop. What is two plus two?"), silence(200)])
    )
    barge_at = await interruption.started
    interrupted_at = await peer.wait_state("interrupted", 10, after=barge_at)
    await peer.wait_state("listening", 10, after=interrupted_at)
    assert peer.states(after=speaking_at)[:3] == ["speaking", "interrupted", "listening"]

    # The agent's audio stopped: nothing audible from it while the user kept talking.
    spoke_until = await interruption.finished
    agent_during = [
        at for at, voiced in peer.agent.frames if voiced and barge_at < at < spoke_until
    ]
    # (none at all is fine too: the interruption may land in a pause between sentences)
    assert max(agent_during, default=barge_at) - barge_at < 1.0, "agent kept talking over the user"

    # History keeps only what the user heard of the interrupted answer.
    session = runtime.app.state.manager.get(peer.session_id)
    first_user, heard = session.conversation.history.turns[0]
    assert "story" in first_user.lower()
    said = [e["text"] for at, e in peer.events if e["type"] == "response" and at < barge_at]
    assert heard and said[-1].startswith(heard) and len(heard) < len(said[-1])

    # The interruption is the next question, and it is answered.
    answer_at = await peer.agent.wait_voiced_after(spoke_until, 30)
    assert answer_at > spoke_until
    await peer.wait_state("listening", 30, after=answer_at)
    finals = [e["text"] for _, e in peer.events if e["type"] == "transcript" and e["final"]]
    assert "plus" in finals[-1].lower()


async def test_short_pause_is_one_turn_and_the_speculation_is_never_heard(
    peer: Peer, runtime: RunningApp
) -> None:
    def trimmed(pcm: np.ndarray) -> np.ndarray:
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 330)
        return pcm[loud[0] : loud[-1] + 1]

    discarded_before = await discarded_speculations(runtime)
    first = trimmed(await speech("How many legs"))
    second = trimmed(await speech("does a big spider have?"))
    # 400 ms: past the 96 ms that starts speculative work, short of the 700 ms endpoint.
    utterance = peer.mic.say(np.concatenate([first, silence(400), second, silence(300)]))
    started = await utterance.started
    ended = await utterance.finished
    await peer.agent.wait_voiced_after(ended, 30)
    await peer.wait_state("listening", 30, after=ended + 0.1)

    first_agent_audio = peer.agent.first_voiced_after(started)
    assert first_agent_audio is not None and first_agent_audio > ended
    finals = [e["text"] for _, e in peer.events if e["type"] == "transcript" and e["final"]]
    assert len(finals) == 1
    assert "legs" in finals[0].lower() and "spider" in finals[0].lower()
    assert peer.states().count("thinking") == 1

    assert await discarded_speculations(runtime) > discarded_before


async def discarded_speculations(app: RunningApp) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{app.url}/metrics")).text
    found = re.search(r'parley_speculations_total\{outcome="discarded"\} ([0-9.]+)', text)
    return float(found.group(1)) if found else 0.0
