"""The scripted conversation of `parley bench compare`: what is said, in which order, by whom.

A conversation is a list of turns, each a plain question or a barge-in (a request for a long
answer, then an interruption); the speaker and rate rotate turn by turn. It depends only on
the seed and the counts, so both stacks hear the same conversation. The lines are the bench's
own (Parley's tests and other benches ask other questions), short and simple in English so
that SmolLM2-135M answers them in English. With `speakers="slow"` the slow speakers ask
their own questions, each with a hesitation (`|`) where the words so far could pass for a
whole question or hang mid-phrase.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from parley_bench.compare.voices import SLOW_SPEAKERS, SPEAKERS, Speaker

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
#: The slow speakers' questions. The first part of some sounds finished on its own ("What is
#: the opposite?"), of others it hangs ("Where does a"): the early endpoint must wait for both.
SLOW_QUESTIONS = (
    "How many strings | does a guitar have?",
    "What is the opposite | of cold?",
    "Which month comes | after June?",
    "What do you call | a group of cows?",
    "Where does a | rabbit sleep at night?",
    "What colour is | the grass in summer?",
    "How many sides | does a square have?",
    "What do bees make | from flowers?",
    "Which animal | gives us wool?",
    "What do we use | to cut paper?",
    "What is the biggest | animal in the sea?",
    "What do you drink | when you are thirsty?",
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
Speakers = Literal["varied", "slow"]
SPEAKER_SETS: dict[Speakers, tuple[tuple[Speaker, ...], tuple[str, ...]]] = {
    "varied": (SPEAKERS, QUESTIONS),
    "slow": (SLOW_SPEAKERS, SLOW_QUESTIONS),
}


def conversation(
    turns: int, barge_ins: int, seed: int, speakers: Speakers = "varied"
) -> list[Turn]:
    """`turns` turns of which `barge_ins` are barge-ins, placed by `seed` (never first
    unless every turn is one); questions are shuffled by `seed` and speakers rotate."""
    rotation, asked_questions = SPEAKER_SETS[speakers]
    if not 0 <= barge_ins <= turns:
        raise ValueError(f"barge-ins ({barge_ins}) must be between 0 and turns ({turns})")
    rng = random.Random(seed)
    later = list(range(1, turns))
    placed = set(rng.sample(later, barge_ins) if barge_ins <= len(later) else range(turns))
    questions = rng.sample(asked_questions, len(asked_questions))
    script: list[Turn] = []
    for index in range(turns):
        speaker = rotation[(seed + index) % len(rotation)]
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
