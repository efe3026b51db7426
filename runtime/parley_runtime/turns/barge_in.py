"""Barge-in guarding, the way LiveKit Agents does it: pause the agent's audio on the first
voiced window, then either confirm the interruption (enough speech) or resume (it was noise or
the agent's own echo). Both outcomes are counted by the caller."""

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
    pending: bool = False

    def speech_started(self) -> BargeInAction:
        self.pending = True
        return BargeInAction.PAUSE

    def speech_continues(self, speech_ms: int) -> BargeInAction | None:
        if self.pending and speech_ms >= self.confirm_ms:
            self.pending = False
            return BargeInAction.CONFIRM
        return None

    def speech_stopped(self) -> BargeInAction | None:
        """The utterance paused or was discarded before it was long enough to count."""
        if self.pending:
            self.pending = False
            return BargeInAction.RESUME
        return None

    def cancel(self) -> None:
        self.pending = False
