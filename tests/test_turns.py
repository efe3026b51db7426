"""Turn-taking decisions, tested as pure functions (no audio, no clock)."""

import pytest

from parley_runtime.turns import (
    AdaptiveSilence,
    BargeInAction,
    BargeInGuard,
    ConversationState,
    Endpointer,
    Hesitations,
    InvalidTransition,
    TurnSignal,
    sounds_finished,
    transition,
)

S = ConversationState


def run(endpointer: Endpointer, probs: list[float]) -> list[TurnSignal]:
    return [signal for p in probs for signal in endpointer.update(p)]


def speech(ms: int) -> list[float]:
    return [0.9] * (ms // 32)


def quiet(ms: int) -> list[float]:
    return [0.05] * (ms // 32)


class TestStates:
    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (S.IDLE, S.LISTENING),
            (S.LISTENING, S.THINKING),
            (S.THINKING, S.SPEAKING),
            (S.THINKING, S.LISTENING),
            (S.SPEAKING, S.INTERRUPTED),
            (S.INTERRUPTED, S.LISTENING),
            (S.SPEAKING, S.LISTENING),
            (S.SPEAKING, S.ENDED),
        ],
    )
    def test_allowed(self, start: S, end: S) -> None:
        assert transition(start, end) is end

    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (S.LISTENING, S.SPEAKING),  # audio never plays before a turn commits
            (S.IDLE, S.SPEAKING),
            (S.INTERRUPTED, S.SPEAKING),
            (S.ENDED, S.LISTENING),
            (S.LISTENING, S.INTERRUPTED),
        ],
    )
    def test_refused(self, start: S, end: S) -> None:
        with pytest.raises(InvalidTransition, match=f"{start.value} -> {end.value}"):
            transition(start, end)


class TestEndpointer:
    def make(self, endpoint_ms: int = 704) -> Endpointer:
        return Endpointer(AdaptiveSilence(400, 1200, endpoint_ms), speculate_after_ms=160)

    def test_full_turn_signals_in_order(self) -> None:
        ep = self.make()
        signals = run(ep, quiet(200) + speech(1000) + quiet(800))
        assert signals == [TurnSignal.SPEECH_START, TurnSignal.PAUSE, TurnSignal.END_OF_TURN]
        assert not ep.active

    def test_short_pause_resumes_without_ending_the_turn(self) -> None:
        ep = self.make()
        signals = run(ep, speech(600) + quiet(320) + speech(600) + quiet(800))
        assert signals == [
            TurnSignal.SPEECH_START,
            TurnSignal.PAUSE,
            TurnSignal.RESUME,
            TurnSignal.PAUSE,
            TurnSignal.END_OF_TURN,
        ]

    def test_end_of_turn_waits_for_the_adaptive_silence(self) -> None:
        ep = self.make(endpoint_ms=992)
        signals = run(ep, speech(500) + quiet(960))
        assert TurnSignal.END_OF_TURN not in signals
        assert run(ep, quiet(32)) == [TurnSignal.END_OF_TURN]

    def test_a_click_is_discarded_not_a_turn(self) -> None:
        ep = self.make()
        signals = run(ep, speech(64) + quiet(400))
        assert signals == [TurnSignal.SPEECH_START, TurnSignal.DISCARD]

    def test_hysteresis_keeps_speech_through_a_dip(self) -> None:
        ep = self.make()
        signals = run(ep, speech(300) + [0.4] * 10 + speech(300))
        assert signals == [TurnSignal.SPEECH_START]
        assert ep.speech_ms == 300 // 32 * 32 * 2 + 320


class TestEarlyEnd:
    def make(self) -> Endpointer:
        return Endpointer(AdaptiveSilence(400, 1200, 704), speculate_after_ms=160)

    def test_finished_words_end_the_turn_at_the_early_silence(self) -> None:
        ep = self.make()
        assert run(ep, speech(600) + quiet(192)) == [TurnSignal.SPEECH_START, TurnSignal.PAUSE]
        assert ep.finish_early(256) == []
        assert run(ep, quiet(32)) == []
        assert run(ep, quiet(32)) == [TurnSignal.EARLY_END_OF_TURN]
        assert not ep.active and ep.early_ms is None
        assert ep.ended_silence_ms == 256

    def test_words_judged_late_end_the_turn_at_once(self) -> None:
        ep = self.make()
        run(ep, speech(600) + quiet(320))
        assert ep.finish_early(256) == [TurnSignal.EARLY_END_OF_TURN]
        assert not ep.active

    def test_speech_resuming_cancels_the_early_end(self) -> None:
        ep = self.make()
        run(ep, speech(600) + quiet(192))
        ep.finish_early(256)
        signals = run(ep, speech(300) + quiet(600))
        assert TurnSignal.EARLY_END_OF_TURN not in signals
        assert signals == [TurnSignal.RESUME, TurnSignal.PAUSE]
        assert run(ep, quiet(128)) == [TurnSignal.END_OF_TURN]

    def test_only_a_paused_utterance_can_end_early(self) -> None:
        ep = self.make()
        assert ep.finish_early(256) == []  # nobody speaking
        run(ep, speech(600))
        assert ep.finish_early(0) == []  # still speaking
        assert ep.early_ms is None


class TestHesitations:
    """A pause the user went on speaking after is a floor for the silences that end a turn:
    any such pause for the full endpoint, one after finished-sounding words for the early one."""

    def make(self, endpoint_ms: int = 512) -> Endpointer:
        return Endpointer(AdaptiveSilence(400, 1200, endpoint_ms), speculate_after_ms=160)

    def hesitate(self, ep: Endpointer, pause_ms: int, sounded_finished: bool) -> None:
        signals = run(ep, speech(600) + quiet(pause_ms) + speech(400))
        assert signals[-1] is TurnSignal.RESUME
        assert ep.resumed_after_ms == pause_ms
        ep.hesitations.observe(ep.resumed_after_ms, sounded_finished)

    def test_a_user_who_went_on_after_a_long_pause_is_not_ended_at_a_shorter_one(self) -> None:
        ep = self.make(endpoint_ms=512)
        self.hesitate(ep, 448, sounded_finished=False)
        assert ep.hesitations.floor_ms == 660  # 448 x 1.25 + 100
        assert ep.end_silence_ms == 660
        assert TurnSignal.END_OF_TURN not in run(ep, quiet(640))
        assert run(ep, quiet(32)) == [TurnSignal.END_OF_TURN]

    def test_nor_early_after_finished_sounding_words(self) -> None:
        ep = self.make(endpoint_ms=1184)
        self.hesitate(ep, 448, sounded_finished=True)
        run(ep, quiet(288))
        assert ep.finish_early(256) == []
        assert ep.early_ms == 660
        assert run(ep, quiet(352)) == []
        assert run(ep, quiet(32)) == [TurnSignal.EARLY_END_OF_TURN]

    def test_a_short_pause_after_hanging_words_leaves_the_early_silence_alone(self) -> None:
        ep = self.make(endpoint_ms=704)
        self.hesitate(ep, 224, sounded_finished=False)  # "Excuse me, | please stop"
        assert ep.early_silence_ms(256) == 256
        assert ep.end_silence_ms == 704  # the floor (380) is shorter than the endpoint

    def test_a_long_pause_counts_for_the_early_silence_whatever_the_words(self) -> None:
        ep = self.make(endpoint_ms=704)
        self.hesitate(ep, 416, sounded_finished=False)  # "Where does a | rabbit sleep?"
        assert ep.early_silence_ms(256) == 620  # 416 x 1.25 + 100

    def test_only_the_last_pauses_are_remembered(self) -> None:
        hesitations = Hesitations(remembered=3)
        for pause in (900, 200, 200):
            hesitations.observe(pause, sounded_finished=True)
        assert hesitations.floor_ms == hesitations.early_floor_ms == 1225
        hesitations.observe(200, sounded_finished=False)
        assert hesitations.floor_ms == hesitations.early_floor_ms == 350
        assert Hesitations().floor_ms == Hesitations().early_floor_ms == 0

    def test_the_floor_stops_at_the_longest_endpoint(self) -> None:
        ep = self.make(endpoint_ms=1184)
        self.hesitate(ep, 1120, sounded_finished=True)
        assert ep.end_silence_ms == 1200 and ep.early_silence_ms(256) == 1200


@pytest.mark.parametrize(
    "transcript",
    [
        "How many legs does a spider have?",
        "Where are you from?",
        "What is it made of?",
        "Tell me a joke.",
        "Thanks!",
        "I think so.",
        "Why is that?",
    ],
)
def test_finished_sounding_transcripts(transcript: str) -> None:
    assert sounds_finished(transcript)


@pytest.mark.parametrize(
    "transcript",
    [
        "",
        "   ",
        "How many legs does a",
        "What is the capital of...",
        "I went to the store and.",
        "Tell me about the.",
        "Can you tell me about.",
        "It depends on my.",
        "Um.",
        "So what do you think, uh?",
        "?",
        "Because…",
    ],
)
def test_hanging_transcripts(transcript: str) -> None:
    assert not sounds_finished(transcript)


class TestAdaptiveSilence:
    def test_widens_on_cut_off_and_narrows_when_safe_within_bounds(self) -> None:
        silence = AdaptiveSilence(min_ms=400, max_ms=1200, current_ms=700)
        silence.cut_off()
        assert silence.current_ms == 850
        for _ in range(10):
            silence.cut_off()
        assert silence.current_ms == 1200
        for _ in range(100):
            silence.safe()
        assert silence.current_ms == 400


class TestBargeInGuard:
    def test_confirmed_after_enough_speech_even_across_a_short_pause(self) -> None:
        guard = BargeInGuard(confirm_ms=200, resume_after_ms=480)
        assert guard.speech_started() is BargeInAction.PAUSE
        assert guard.update(speech_ms=96, silence_ms=0) is None
        assert guard.update(speech_ms=128, silence_ms=320) is None  # "Wait, ..."
        assert guard.update(speech_ms=224, silence_ms=0) is BargeInAction.CONFIRM
        assert not guard.pending
        assert guard.update(speech_ms=500, silence_ms=0) is None

    def test_false_alarm_resumes_after_silence(self) -> None:
        guard = BargeInGuard(confirm_ms=200, resume_after_ms=480)
        guard.speech_started()
        assert guard.update(speech_ms=128, silence_ms=448) is None
        assert guard.update(speech_ms=128, silence_ms=480) is BargeInAction.RESUME
        assert guard.update(speech_ms=500, silence_ms=0) is None

    def test_a_discarded_click_resumes_at_once(self) -> None:
        guard = BargeInGuard()
        guard.speech_started()
        assert guard.utterance_ended() is BargeInAction.RESUME
        assert guard.utterance_ended() is None
