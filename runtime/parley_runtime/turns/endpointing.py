"""Endpointing: from per-window speech probabilities to turn signals.

Works in audio time (one call per 32 ms VAD window), so it is deterministic and testable
without a clock. The silence that ends a turn adapts (`AdaptiveSilence`): it widens when the
user turns out to have been cut off and narrows after turns that ended safely. When the
words of a paused utterance sound finished (`turns.completion`), `finish_early` ends the turn
at a shorter silence instead (`EARLY_END_OF_TURN`). Neither silence is shorter than the
user's own hesitations (`Hesitations`, which the caller feeds): someone who has paused 600 ms
after words that sounded finished and gone on is not answered at 250 ms of silence again.

An utterance is capped (`max_utterance_ms`, 30 s): speech that never pauses long enough to
end a turn (a television in the room, a monologue) ends the utterance there (`CAP`), and
whatever follows is a new one. The caller, which keeps the utterance's audio, therefore never
holds more than the cap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class TurnSignal(StrEnum):
    SPEECH_START = "speech_start"  # first voiced window of an utterance
    PAUSE = "pause"  # the utterance paused long enough to start speculative work
    RESUME = "resume"  # speech came back after PAUSE, before the turn ended
    DISCARD = "discard"  # the "utterance" was too short to be speech (a click, a cough)
    END_OF_TURN = "end_of_turn"  # silence outlasted the adaptive endpoint: commit the turn
    EARLY_END_OF_TURN = "early_end_of_turn"  # the words sounded finished: commit it sooner
    CAP = "cap"  # the utterance reached max_utterance_ms: commit it as it stands


@dataclass
class AdaptiveSilence:
    """The silence that ends a turn, kept within [min_ms, max_ms]."""

    min_ms: int = 400
    max_ms: int = 1200
    current_ms: int = 700
    widen_ms: int = 150
    narrow_ms: int = 25

    def cut_off(self) -> None:
        self.current_ms = min(self.max_ms, self.current_ms + self.widen_ms)

    def safe(self) -> None:
        self.current_ms = max(self.min_ms, self.current_ms - self.narrow_ms)


@dataclass
class Hesitations:
    """The pauses after which this user went on speaking, the last `remembered` of them. A turn
    ends only at a silence clearly longer than the longest: its factor and margin cover the
    windows the VAD needs to see a pause begin and end, and a speaker whose hesitations vary.
    The full endpoint heeds them all. The early endpoint heeds the long ones (`long_ms`: a
    hesitation, whatever the words), and the short ones only after words that sounded finished,
    where it could have answered too soon: the short break at a comma ("Excuse me, | please
    stop") is no reason to wait longer after a finished question."""

    remembered: int = 8
    factor: float = 1.25
    margin_ms: int = 100
    long_ms: int = 400
    pauses: deque[tuple[int, bool]] = field(default_factory=deque)  # (ms, sounded finished)

    def observe(self, pause_ms: int, sounded_finished: bool) -> None:
        self.pauses.append((pause_ms, sounded_finished))
        while len(self.pauses) > self.remembered:
            self.pauses.popleft()

    @property
    def floor_ms(self) -> int:
        """No turn ends at a shorter silence."""
        return self._floor([ms for ms, _ in self.pauses])

    @property
    def early_floor_ms(self) -> int:
        """No turn ends early at a shorter silence."""
        return self._floor([ms for ms, finished in self.pauses if finished or ms >= self.long_ms])

    def _floor(self, pauses_ms: list[int]) -> int:
        return round(max(pauses_ms) * self.factor) + self.margin_ms if pauses_ms else 0


@dataclass
class Endpointer:
    silence: AdaptiveSilence
    threshold: float = 0.5
    release_threshold: float = 0.35
    speculate_after_ms: int = 96
    min_speech_ms: int = 96
    window_ms: int = 32
    max_utterance_ms: int = 30_000

    active: bool = False  # inside an utterance
    voiced: bool = False  # the last window was speech (with hysteresis)
    speech_ms: int = 0  # voiced time in the current utterance
    silence_ms: int = 0  # silence since the last voiced window
    utterance_ms: int = 0  # the current utterance so far, pauses included
    paused: bool = False
    early_ms: int | None = None  # this pause ends the turn at this silence (finish_early)
    ended_silence_ms: int = 0  # the silence that ended the last turn
    resumed_after_ms: int = 0  # the pause of the last RESUME
    hesitations: Hesitations = field(default_factory=Hesitations)

    @property
    def end_silence_ms(self) -> int:
        """The silence that ends this turn: the adaptive one, or the user's hesitations' floor
        when that is longer (up to the longest endpoint)."""
        return max(self.silence.current_ms, min(self.hesitations.floor_ms, self.silence.max_ms))

    def early_silence_ms(self, early_ms: int) -> int:
        """`early_ms`, or the floor of the user's hesitations after finished-sounding words
        when that is longer (up to the longest endpoint)."""
        return max(early_ms, min(self.hesitations.early_floor_ms, self.silence.max_ms))

    def update(self, prob: float) -> list[TurnSignal]:
        self.voiced = prob >= self.threshold or (self.voiced and prob >= self.release_threshold)
        if self.voiced:
            signals = self._on_voiced()
        elif self.active:
            signals = self._on_silent()
        else:
            return []
        return signals + self._capped()

    def reset(self) -> None:
        self.ended_silence_ms = self.silence_ms
        self.active = self.voiced = self.paused = False
        self.speech_ms = self.silence_ms = self.utterance_ms = 0
        self.early_ms = None

    def finish_early(self, after_ms: int) -> list[TurnSignal]:
        """The current pause's words sound finished: end the turn once the silence reaches
        `after_ms` (at once when it already has), unless speech resumes first."""
        if not (self.active and self.paused):
            return []
        self.early_ms = self.early_silence_ms(after_ms)
        if self.silence_ms < self.early_ms:
            return []
        self.reset()
        return [TurnSignal.EARLY_END_OF_TURN]

    def _capped(self) -> list[TurnSignal]:
        if not self.active:
            return []
        self.utterance_ms += self.window_ms
        if self.utterance_ms < self.max_utterance_ms:
            return []
        self.reset()
        return [TurnSignal.CAP]

    def _on_voiced(self) -> list[TurnSignal]:
        signals = []
        if not self.active:
            self.active = True
            signals.append(TurnSignal.SPEECH_START)
        elif self.paused:
            self.resumed_after_ms = self.silence_ms
            self.paused = False
            self.early_ms = None
            signals.append(TurnSignal.RESUME)
        self.speech_ms += self.window_ms
        self.silence_ms = 0
        return signals

    def _on_silent(self) -> list[TurnSignal]:
        self.silence_ms += self.window_ms
        if self.silence_ms >= self.speculate_after_ms and self.speech_ms < self.min_speech_ms:
            self.reset()
            return [TurnSignal.DISCARD]
        signals = []
        if not self.paused and self.silence_ms >= self.speculate_after_ms:
            self.paused = True
            signals.append(TurnSignal.PAUSE)
        if self.silence_ms >= self.end_silence_ms:
            self.reset()
            signals.append(TurnSignal.END_OF_TURN)
        elif self.early_ms is not None and self.silence_ms >= self.early_ms:
            self.reset()
            signals.append(TurnSignal.EARLY_END_OF_TURN)
        return signals
