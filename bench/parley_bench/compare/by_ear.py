"""Turns timed by ear: V2V and barge-in from the audio alone, the same way for any stack.

Pipecat's SmallWebRTC bot sends audio and nothing else, so nothing here waits for a `state`
or `metrics` event (as `parley_bench.dialogue` does for Parley); both stacks are timed from
what this client sends and hears (DESIGN.md's definitions):

- **V2V**: send time of the question's last voiced sample (`ScriptedMicrophone.say(...)
  .finished`, computed from the PCM, so the silence after the speech does not count) →
  arrival of the first audible agent frame after it.
- **Answered**: the agent has spoken and then been quiet for `QUIET_S`. No agent audio within
  `ANSWER_TIMEOUT_S` is a `no_answer`, counted, not dropped.
- **Barge-in**: send time of the interruption's first voiced sample → arrival of the last
  audible agent frame before the agent went quiet (`QUIET_S` without an audible frame). The
  interruption starts `INTERRUPT_AFTER_S` after the long answer's first audio; when the agent
  had already stopped by then there was `nothing_to_interrupt`, counted apart; an agent still
  talking `SPEAKING_LIMIT_S` later was `not_stopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from parley_bench.peer import AgentRecorder, Peer

#: Agent silence that ends its answer (sentence pauses are shorter).
QUIET_S = 1.0
#: No audible agent frame this long after a question: no answer.
ANSWER_TIMEOUT_S = 30.0
#: An answer still going on after this is not waited for any longer.
SPEAKING_LIMIT_S = 90.0
#: The interruption starts this long after the long answer's first audio.
INTERRUPT_AFTER_S = 0.8
#: After an interruption, how long to wait for the agent to answer it before the next turn.
INTERRUPTION_REPLY_WAIT_S = 15.0

OUTCOMES = ("answered", "no_answer", "interrupted", "nothing_to_interrupt", "not_stopped")


@dataclass(frozen=True)
class Heard:
    """What one turn sounded like from the client."""

    outcome: str  # one of OUTCOMES
    began: float  # when the turn's first utterance was queued (monotonic)
    asked: float  # send time of the (first) question's last voiced sample
    v2v_ms: float | None = None
    barge_in_ms: float | None = None
    talked_over: bool = False  # the agent was audible while the question was being said


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def speech_end(frames: Sequence[tuple[float, bool]], since: float, quiet_s: float) -> float | None:
    """When the agent's speech under way at `since` ended: from the last audible frame at or
    before `since`, follow audible frames while the gaps between them stay under `quiet_s`,
    and return the arrival of the last one. None when nothing audible arrived by `since`. A
    result at or before `since` means the agent had already stopped."""
    last: float | None = None
    for at, voiced in frames:
        if not voiced:
            continue
        if at <= since:
            last = at
        elif last is None or at - last >= quiet_s:
            break
        else:
            last = at
    return last


async def settle(agent: AgentRecorder) -> None:
    """Let the agent finish whatever it is still saying before a turn begins (bounded)."""
    with contextlib.suppress(TimeoutError):
        await agent.wait_quiet(QUIET_S, SPEAKING_LIMIT_S)


async def ask(peer: Peer, question: np.ndarray) -> Heard:
    """Say `question`, wait for the whole answer."""
    await settle(peer.agent)
    began = time.monotonic()
    said = peer.mic.say(question)
    started = await said.started
    asked = await said.finished
    talked_over = any(v for at, v in peer.agent.frames if started < at <= asked)
    try:
        first = await peer.agent.wait_voiced_after(asked, ANSWER_TIMEOUT_S)
    except TimeoutError:
        return Heard("no_answer", began, asked, talked_over=talked_over)
    await settle(peer.agent)
    return Heard("answered", began, asked, v2v_ms=ms(first - asked), talked_over=talked_over)


async def barge_in(peer: Peer, request: np.ndarray, interruption: np.ndarray) -> Heard:
    """Ask for a long answer, interrupt it `INTERRUPT_AFTER_S` in, time how long the agent
    kept talking, then let it answer the interruption."""
    await settle(peer.agent)
    began = time.monotonic()
    asked = await peer.mic.say(request).finished
    try:
        first = await peer.agent.wait_voiced_after(asked, ANSWER_TIMEOUT_S)
    except TimeoutError:
        return Heard("no_answer", began, asked)
    await asyncio.sleep(max(0.0, first + INTERRUPT_AFTER_S - time.monotonic()))
    said = peer.mic.say(interruption)
    started = await said.started
    try:
        await peer.agent.wait_quiet(QUIET_S, SPEAKING_LIMIT_S)
    except TimeoutError:
        return Heard("not_stopped", began, asked)
    end = speech_end(peer.agent.frames, started, QUIET_S)
    finished = await said.finished
    with contextlib.suppress(TimeoutError):
        await peer.agent.wait_voiced_after(finished, INTERRUPTION_REPLY_WAIT_S)
    await settle(peer.agent)
    if end is None or end <= started:
        return Heard("nothing_to_interrupt", began, asked)
    return Heard("interrupted", began, asked, barge_in_ms=ms(end - started))
