"""One scripted conversation against one stack: connect, play every turn, record each.

At a duty cycle below 1 the conversation pauses after each turn (the microphone sends silence,
the session stays open) for `active × (1 − duty) / duty` (± 20 %, seeded), so about `duty` of
its time is talk, as in `parley soak`. With Parley, each question's `metrics` event (the
runtime's own stage timings), every turn's `error` events and what the agent said (its
`response` events) are kept beside what was heard.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from parley_bench.compare.by_ear import Heard, ask, barge_in
from parley_bench.compare.script import Question, Turn
from parley_bench.compare.voices import spoken
from parley_bench.latency import TURN_FIELDS
from parley_bench.peer import AgentRecorder, Peer, Signalling

CONNECT_TIMEOUT_S = 30.0
#: Between connecting and the first question: both stacks start their pipelines once the
#: connection is up, and neither says when it listens over audio alone.
AFTER_CONNECT_S = 1.0


def idle_after(active_s: float, duty_cycle: float, rng: random.Random) -> float:
    """Silence after `active_s` of talk that keeps the session at `duty_cycle` (± 20 %)."""
    if duty_cycle >= 1:
        return 0.0
    return active_s * (1 - duty_cycle) / duty_cycle * rng.uniform(0.8, 1.2)


def turn_metrics(peer: Peer, heard: Heard, until: float) -> dict[str, Any] | None:
    """The first `metrics` event that arrived between the question and `until` (Parley only;
    None for a stack without events or a turn without one)."""
    for at, event in peer.events:
        if event.get("type") == "metrics" and heard.asked <= at <= until:
            return {name: event.get(name) for name in TURN_FIELDS}
    return None


def error_codes(peer: Peer, since: float, until: float) -> list[str]:
    """The codes of the `error` events that arrived in the turn (Parley only: a turn reset by
    its deadline is `turn_reset`, and explains a `no_answer`)."""
    return [
        str(event.get("code"))
        for at, event in peer.events
        if event.get("type") == "error" and since <= at <= until
    ]


def agent_text(peer: Peer, since: float, until: float) -> list[str]:
    """What the agent said in the turn, one entry per answer (Parley only: its `response`
    events, each the answer's text so far; an interrupted answer ends where it was cut)."""
    said: list[str] = []
    for at, event in peer.events:
        if event.get("type") != "response" or not since <= at <= until:
            continue
        text = str(event.get("text", ""))
        if said and text.startswith(said[-1]):
            said[-1] = text
        else:
            said.append(text)
    return said


def record(
    session: int,
    turn: Turn,
    heard: Heard,
    metrics: dict[str, Any] | None,
    errors: list[str],
    said: list[str],
) -> dict[str, Any]:
    return {
        "session": session,
        "kind": "question" if isinstance(turn, Question) else "barge_in",
        "said": turn.text if isinstance(turn, Question) else turn.request,
        "speaker": str(turn.speaker),
        "outcome": heard.outcome,
        "v2v_ms": heard.v2v_ms,
        "barge_in_ms": heard.barge_in_ms,
        "talked_over": heard.talked_over,
        "metrics": metrics,
        "server_errors": errors,
        "agent_text": said,
    }


async def converse(
    url: str,
    signalling: Signalling,
    script: list[Turn],
    *,
    session: int,
    duty_cycle: float,
    seed: int,
    start_after_s: float,
    on_turn: Callable[[int, dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Play `script` as session number `session`; `on_turn(index, record)` after each turn."""
    rng = random.Random(seed)
    await asyncio.sleep(start_after_s)
    peer = Peer(url, agent=AgentRecorder(keep_audio=False), signalling=signalling)
    records: list[dict[str, Any]] = []
    try:
        await peer.connect(timeout=CONNECT_TIMEOUT_S)
        await asyncio.sleep(AFTER_CONNECT_S)
        for index, turn in enumerate(script):
            if isinstance(turn, Question):
                heard = await ask(peer, spoken(turn.text, turn.speaker))
            else:
                heard = await barge_in(
                    peer,
                    spoken(turn.request, turn.speaker),
                    spoken(turn.interruption, turn.speaker),
                )
            ended = time.monotonic()
            metrics = turn_metrics(peer, heard, ended) if isinstance(turn, Question) else None
            errors = error_codes(peer, heard.began, ended)
            said = agent_text(peer, heard.began, ended)
            records.append(record(session, turn, heard, metrics, errors, said))
            on_turn(index, records[-1])
            if index < len(script) - 1:
                await asyncio.sleep(idle_after(ended - heard.began, duty_cycle, rng))
    finally:
        await peer.close()
    return records
