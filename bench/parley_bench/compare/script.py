"""The scripted conversation of `parley bench compare`: what is said, in which order, by whom.

A conversation is a list of turns, each a plain question or a barge-in (a request for a long
answer, then an interruption); the speaker and rate rotate turn by turn. It depends only on
the seed and the counts, so both stacks hear the same conversation. The lines are the bench's
own (Parley's tests and other benches ask other questions), short and simple in English so
that SmolLM2-135M answers them in English.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from parley_bench.compare.voices import SPEAKERS, Speaker

QUESTIONS = (
    "What do fish live in?",
    "What do we call a baby dog?",
    "How many eyes does a person have?",
    "Which animal has a long trunk?",
    "What do birds use to fly?",
    "What sound does a cat make?",
    "What is the name of our planet?",
    "Which day comes after Monday?",
    "What do you wear on your feet?",
    "What fruit is yellow and long?",
    "Where do we keep the milk cold?",
    "What do you call a house for a bird?",
)
LONG_REQUESTS = (
    "Tell me a long story about a little fox who lived in a forest.",
    "Tell me a long story about a dragon who loved to bake cakes.",
    "Tell me a long story about a girl who built a boat.",
)
INTERRUPTIONS = (
    "Excuse me, please stop there.",
    "Okay, that is enough, thanks.",
    "Hang on, let me ask you something.",
)


@dataclass(frozen=True)
class Question:
    text: str
    speaker: Speaker


@dataclass(frozen=True)
class BargeIn:
    request: str  # asks for a long answer
    interruption: str  # said over that answer
    speaker: Speaker


Turn = Question | BargeIn


def conversation(turns: int, barge_ins: int, seed: int) -> list[Turn]:
    """`turns` turns of which `barge_ins` are barge-ins, placed by `seed` (never first
    unless every turn is one); questions are shuffled by `seed` and speakers rotate."""
    if not 0 <= barge_ins <= turns:
        raise ValueError(f"barge-ins ({barge_ins}) must be between 0 and turns ({turns})")
    rng = random.Random(seed)
    later = list(range(1, turns))
    placed = set(rng.sample(later, barge_ins) if barge_ins <= len(later) else range(turns))
    questions = rng.sample(QUESTIONS, len(QUESTIONS))
    script: list[Turn] = []
    for index in range(turns):
        speaker = SPEAKERS[(seed + index) % len(SPEAKERS)]
        if index in placed:
            asked = sum(isinstance(turn, BargeIn) for turn in script)
            script.append(
                BargeIn(
                    LONG_REQUESTS[asked % len(LONG_REQUESTS)],
                    INTERRUPTIONS[asked % len(INTERRUPTIONS)],
                    speaker,
                )
            )
        else:
            asked = sum(isinstance(turn, Question) for turn in script)
            script.append(Question(questions[asked % len(questions)], speaker))
    return script


def lines(script: list[Turn]) -> list[tuple[str, Speaker]]:
    """Everything the script says, with its speaker (to synthesize before the clock starts)."""
    said: list[tuple[str, Speaker]] = []
    for turn in script:
        if isinstance(turn, Question):
            said.append((turn.text, turn.speaker))
        else:
            said += [(turn.request, turn.speaker), (turn.interruption, turn.speaker)]
    return said
