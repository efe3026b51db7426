"""Barge-in guarding, the way LiveKit Agents does it: pause the agent's audio on the first
voiced window, then either confirm the interruption (enough speech) or resume (it was noise,
a cough or the agent's own echo). Both outcomes are counted by the caller.

A short pause inside the interruption ("Wait, ... stop") does not resume the agent: only a
silence of `resume_after_ms` without enough speech does, or an utterance too short to be speech.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BargeInAction(StrEnum):
    PAUSE = "pause"  # stop agent audio now (reversible)
    CONFIRM = "confirm"  # a real interruption: clear audio, cancel the reply
    RESUME = "resume"  # false alarm: play on


@dataclass
class BargeInGuard:
    confirm_ms: int = 200
    resume_after_ms: int = 480
    pending: bool = False

    def speech_started(self) -> BargeInAction:
        self.pending = True
        return BargeInAction.PAUSE

    def update(self, speech_ms: int, silence_ms: int) -> BargeInAction | None:
        """Called once per VAD window while an utterance is open."""
        if not self.pending:
            return None
        if speech_ms >= self.confirm_ms:
            self.pending = False
            return BargeInAction.CONFIRM
        if silence_ms >= self.resume_after_ms:
            self.pending = False
            return BargeInAction.RESUME
        return None

    def utterance_ended(self) -> BargeInAction | None:
        """The utterance ended (discarded as a click, or an endpoint) before it confirmed."""
        if self.pending:
            self.pending = False
            return BargeInAction.RESUME
        return None
