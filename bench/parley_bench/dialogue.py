"""How a benchmark talks to the agent: ask and wait for the answer, or ask for a long answer
and interrupt it. Shared by `parley bench latency` and `parley soak`, so both measure V2V and
barge-in the same way (DESIGN.md's definitions, timed at this client):

- V2V: last voiced sample of the question sent → first audible agent frame received.
- Barge-in: first voiced sample of the interruption sent → last audible agent frame received.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from parley_bench.peer import Peer
from parley_bench.speech import silence, speech

#: Silence after each utterance, so the endpointer hears the pause that ends the turn.
_TRAILING_SILENCE_MS = 200
#: The agent must have been audible this long before the interruption starts.
_INTERRUPT_AFTER_S = 0.8


@dataclass(frozen=True)
class Answer:
    asked: float  # send time of the question's last voiced sample
    first_audio: float  # arrival time of the first audible agent frame after it
    metrics: dict[str, Any]  # the turn's `metrics` event

    @property
    def v2v_ms(self) -> float:
        return round((self.first_audio - self.asked) * 1000, 1)


async def utterance(text: str) -> np.ndarray:
    """`text` spoken, followed by the pause that ends a turn."""
    return np.concatenate([await speech(text), silence(_TRAILING_SILENCE_MS)])


async def wait_answered(peer: Peer, after: float, timeout: float = 60) -> None:
    """Wait until the agent has answered what was said at `after` and gone quiet again."""
    first = await peer.agent.wait_voiced_after(after, timeout)
    await peer.wait_state("listening", timeout, after=first)
    await peer.agent.wait_quiet(0.5, timeout)


async def ask(peer: Peer, question: str, timeout: float = 60, turn: int | None = None) -> Answer:
    """Speak `question`, wait for the whole answer. `turn` picks the `metrics` event by the
    runtime's turn number; without it, the first one after the question is taken."""
    asked = await peer.mic.say(await utterance(question)).finished
    first = await peer.agent.wait_voiced_after(asked, timeout)
    _, metrics = await peer.wait_for(
        lambda e: e["type"] == "metrics" and (turn is None or e["turn"] == turn),
        timeout,
        after=asked,
    )
    await wait_answered(peer, asked, timeout)
    return Answer(asked, first, metrics)


async def interrupt(
    peer: Peer, long_question: str, interruption: str, timeout: float = 60
) -> float | None:
    """Ask for a long answer, interrupt it mid-sentence, wait for the answer to the
    interruption; return the barge-in latency in ms (None when the agent had already stopped,
    so there was nothing to interrupt)."""
    asked = await peer.mic.say(await utterance(long_question)).finished
    first = await peer.agent.wait_voiced_after(asked, timeout)
    await asyncio.sleep(max(0.0, first + _INTERRUPT_AFTER_S - time.monotonic()))
    spoken = peer.mic.say(await utterance(interruption))
    started = await spoken.started
    finished = await spoken.finished
    frames = peer.agent.frames
    still_talking = any(v for at, v in frames if started - 0.1 <= at <= started)
    last = max((at for at, v in frames if v and started <= at <= finished), default=None)
    await wait_answered(peer, finished, timeout)
    if not still_talking:
        return None
    return round(((last or started) - started) * 1000, 1)
