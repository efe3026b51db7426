"""Turn-taking decisions, all pure: conversation states, endpointing, barge-in guarding."""

from parley_runtime.turns.barge_in import BargeInAction, BargeInGuard
from parley_runtime.turns.completion import sounds_finished
from parley_runtime.turns.endpointing import AdaptiveSilence, Endpointer, Hesitations, TurnSignal
from parley_runtime.turns.states import ConversationState, InvalidTransition, transition

__all__ = [
    "AdaptiveSilence",
    "BargeInAction",
    "BargeInGuard",
    "ConversationState",
    "Endpointer",
    "Hesitations",
    "InvalidTransition",
    "TurnSignal",
    "sounds_finished",
    "transition",
]
