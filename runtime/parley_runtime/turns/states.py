"""The conversation state machine. Every change goes through `transition`, which refuses
moves the design does not allow, so a bug shows up as an error instead of a confused UI."""

from __future__ import annotations

from enum import StrEnum


class ConversationState(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"
    ENDED = "ended"


_S = ConversationState

ALLOWED: dict[ConversationState, frozenset[ConversationState]] = {
    _S.IDLE: frozenset({_S.LISTENING, _S.ENDED}),
    # LISTENING -> THINKING when a turn commits.
    _S.LISTENING: frozenset({_S.THINKING, _S.ENDED}),
    # THINKING -> LISTENING when there is nothing to say or the reply failed;
    # THINKING -> INTERRUPTED when the user speaks again before the first audio.
    _S.THINKING: frozenset({_S.SPEAKING, _S.LISTENING, _S.INTERRUPTED, _S.ENDED}),
    _S.SPEAKING: frozenset({_S.LISTENING, _S.INTERRUPTED, _S.ENDED}),
    _S.INTERRUPTED: frozenset({_S.LISTENING, _S.ENDED}),
    _S.ENDED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


def transition(current: ConversationState, target: ConversationState) -> ConversationState:
    if target not in ALLOWED[current]:
        raise InvalidTransition(f"{current.value} -> {target.value} is not allowed")
    return target
