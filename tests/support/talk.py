"""Talking to a runtime in tests: one spoken turn, and the events that followed it."""

from __future__ import annotations

import numpy as np

from parley_bench.peer import Peer
from parley_bench.speech import silence, speech

QUESTION = "What is the capital of France?"
#: Long enough for a partial transcript while each is spoken.
LONG_QUESTIONS = (
    "Could you tell me which river runs through the middle of Paris?",
    "And which mountains lie on the border between France and Spain?",
)


async def turn(peer: Peer, question: str = QUESTION, timeout: float = 30) -> float:
    """Speak; return the time the question ended, once the agent listens again after it."""
    asked = await peer.mic.say(np.concatenate([await speech(question), silence(200)])).finished
    thinking = await peer.wait_state("thinking", timeout, after=asked - 1)
    await peer.wait_state("listening", timeout, after=thinking)
    return asked


def errors_after(peer: Peer, t: float) -> list[dict[str, object]]:
    return [e for at, e in peer.events if e["type"] == "error" and at >= t]
