"""The per-session conductor: audio in → VAD → endpointing → replies → audio out.

It owns the conversation state and turns the pure decisions (`parley_runtime.turns`) into
actions: start a speculative reply at a pause, drop it if speech resumes, commit it at the end
of the turn (sooner when its transcript sounds finished), pause/clear the agent's audio on
barge-in, trim history to what was heard, and
reset a turn whose first audio misses the turn deadline (nothing partial is ever spoken).

It reads the pod's backpressure level at the start of each reply (level BRIEF and above ask
for shorter answers, and stop the LLM server reading turns ahead at their partial transcripts)
and reports every turn's outcome and latencies to its observers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parley.pcm import INPUT_RATE
from parley.scos import BackpressureLevel
from parley_runtime.agent.reply import Reply, user_turn
from parley_runtime.asr import SpeechRecognizer
from parley_runtime.audio import AgentAudioOutput
from parley_runtime.config import RuntimeSettings
from parley_runtime.events import EventChannel, error_event, state_event, transcript_event
from parley_runtime.llm import ChatClient, ChatHistory, LLMError, SlotPool
from parley_runtime.telemetry import ConversationObserver, TurnMetrics, TurnOutcome
from parley_runtime.turns import (
    AdaptiveSilence,
    BargeInAction,
    BargeInGuard,
    ConversationState,
    Endpointer,
    Hesitations,
    TurnSignal,
    sounds_finished,
    transition,
)
from parley_runtime.vad import SileroVAD
from parley_tts import TTSService

log = logging.getLogger(__name__)

_PREROLL_MS = 300
#: Speech starting this soon after the end of the user's speech, once the turn has ended, means
#: the user was cut off, not interrupting: the answer has barely begun.
_CUT_OFF_WINDOW_MS = 1000
_PARTIAL_MIN_MS = 800
#: From this backpressure level on, the LLM server is not asked to read a turn ahead at its
#: partial transcripts. Each read-ahead also reads a token and the template's closing lines,
#: which the final request reads again: in a four-session run twice the prompt tokens of all
#: the answers' requests together. That is speculative work a busy pod sheds, as it asks
#: for shorter answers at this level; four-session runs with and without it did not tell
#: apart (docs/benchmarks.md, runs 35-38).
_BUSY = BackpressureLevel.BRIEF
#: What an interrupted, unheard question carries into the next turn, at most (its end). Speech
#: that never stops (a television) would otherwise pile up there, turn after capped turn.
_CARRY_OVER_MAX_CHARS = 2000
#: Narrow the endpoint only after a turn that ended safely *and* whose speculative answer was
#: already waiting at commit: when the pipeline is the bottleneck, a shorter endpoint only
#: risks cutting the user off without answering any sooner.
_READY_AT_COMMIT_MS = 60
#: DESIGN.md: a session is in steady state after 3 turns or 60 s; before that, warm-up.
_WARM_UP_TURNS = 3
_WARM_UP_S = 60.0


def _heard_finished_words(transcript: asyncio.Future[str]) -> bool:
    """A reply's transcript is in, and its words sound like a finished turn."""
    return (
        transcript.done()
        and not transcript.cancelled()
        and transcript.exception() is None
        and sounds_finished(transcript.result())
    )


@dataclass
class Services:
    """The shared, loaded models and clients every session uses."""

    asr: SpeechRecognizer
    vad: SileroVAD
    tts: TTSService
    llm: ChatClient
    #: The LLM server's slots, one kept by each session (none: the server chooses).
    llm_slots: SlotPool = field(default_factory=lambda: SlotPool(0))
    #: The pod's backpressure level, read when a reply starts and at partial transcripts.
    backpressure: Callable[[], BackpressureLevel] = field(default=lambda: BackpressureLevel.NORMAL)


class Conversation:
    def __init__(
        self,
        services: Services,
        settings: RuntimeSettings,
        output: AgentAudioOutput,
        events: EventChannel,
        observers: Iterable[ConversationObserver] = (),
        system_prompt: str | None = None,
        voice: str | None = None,
    ) -> None:
        self._services = services
        self._settings = settings
        self._output = output
        self._events = events
        self._observers = list(observers)
        self._voice = voice
        self.state = ConversationState.IDLE
        self._started_at = time.monotonic()
        self.history = ChatHistory(
            system_prompt or settings.system_prompt,
            settings.history_token_budget,
            settings.history_rollover_tokens,
        )
        self.silence = AdaptiveSilence(
            settings.endpoint_min_ms, settings.endpoint_max_ms, settings.endpoint_initial_ms
        )
        #: The shorter silence that ends a turn whose words sound finished; it adapts as the
        #: other does, widening when such a commit cut the user off. None: off.
        self.early_silence = (
            AdaptiveSilence(
                settings.early_endpoint_ms,
                settings.endpoint_max_ms,
                settings.early_endpoint_ms,
            )
            if settings.early_endpoint_ms
            else None
        )
        self._committed_early = False
        self._committed_silence_ms = 0  # the silence that ended the committed turn
        self._committed_endpoint_ms = 0  # the endpoint in force then
        #: The pauses this user went on speaking after: no turn ends at a shorter silence.
        self.hesitations = Hesitations()
        self._vad = services.vad.stream()
        self._endpointer = Endpointer(
            self.silence,
            threshold=settings.vad_threshold,
            release_threshold=max(0.05, settings.vad_threshold - 0.15),
            speculate_after_ms=settings.speculate_after_ms,
            max_utterance_ms=settings.max_utterance_ms,
            hesitations=self.hesitations,
        )
        self._guard = BargeInGuard(settings.barge_in_confirm_ms)
        self._recent: deque[np.ndarray] = deque()
        self._recent_samples = 0
        self._utterance: list[np.ndarray] = []
        self._utterance_id = 0
        self._audio_ms = 0.0
        self._committed_at_ms: float | None = None
        self._last_partial_ms = 0.0
        self._partial: asyncio.Task[None] | None = None
        self._carry_over = ""
        self.reply: Reply | None = None
        #: Every reply started and not yet finished, whether current or dropped.
        self._replies: list[Reply] = []
        self._follower: asyncio.Task[None] | None = None
        self._prefill: asyncio.Task[None] | None = None
        self._barge_in_ms: float | None = None
        self.turns = 0
        #: This session's slot of the LLM server while it runs (`SlotPool`).
        self._llm_slot: int | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._set_state(ConversationState.LISTENING)
        self._llm_slot = self._services.llm_slots.take()
        if self._settings.llm_prefill:
            self._read_ahead(self.history.messages("")[:1])

    def _read_ahead(self, messages: list[dict[str, str]]) -> None:
        """Have the LLM server read the start of this session's next request now, in its
        slot, unless it is still reading the last one: the system prompt when the session
        starts (the embedded LLM's first token, 240–370 ms without, 90 ms with, on 2 cores),
        and, unless the pod is busy, the conversation up to the user's words so far at each
        partial transcript, so that the request at the end of the turn reads only the rest
        of the question."""
        if self._prefill is None or self._prefill.done():
            self._prefill = asyncio.create_task(self._prefill_llm(messages), name="prefill")

    async def _prefill_llm(self, messages: list[dict[str, str]]) -> None:
        try:
            await self._services.llm.prefill(messages, self._llm_slot)
        except LLMError as exc:
            log.info("the LLM server could not read ahead: %s", exc)

    @property
    def steady(self) -> bool:
        """Past warm-up: more than 3 turns, or 60 s since the session started."""
        return self.turns > _WARM_UP_TURNS or time.monotonic() - self._started_at >= _WARM_UP_S

    async def close(self) -> None:
        """End the conversation: cancel every reply still running (the current one and any
        dropped earlier that is still unwinding), the follower and the partial transcript,
        and return only once all of them have finished."""
        if self.state is not ConversationState.ENDED:
            self._set_state(ConversationState.ENDED)
        self.reply = None
        replies, self._replies = self._replies, []
        tasks = [t for t in (self._partial, self._follower, self._prefill) if t is not None]
        for task in tasks:
            task.cancel()
        for reply in replies:
            reply.cancel()
        results = await asyncio.gather(
            *tasks, *(reply.wait_closed() for reply in replies), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                log.error("a conversation task failed before it was closed", exc_info=result)
        # Only now: no request of this session is left to run in the slot.
        slot, self._llm_slot = self._llm_slot, None
        self._services.llm_slots.give_back(slot)

    # -- audio in -------------------------------------------------------------------------

    def feed(self, pcm: np.ndarray) -> None:
        """16 kHz mono int16 from the user's track, in arrival order."""
        if self.state is ConversationState.ENDED:
            return
        self._audio_ms += len(pcm) * 1000 / INPUT_RATE
        self._remember(pcm)
        if self._endpointer.active:
            self._utterance.append(pcm)
        for prob in self._vad.feed(pcm):
            for signal in self._endpointer.update(prob):
                self._on_signal(signal)
            action = self._guard.update(self._endpointer.speech_ms, self._endpointer.silence_ms)
            if action is BargeInAction.CONFIRM:
                self._interrupt()
            elif action is BargeInAction.RESUME:
                self._false_barge_in()
        self._maybe_partial()

    def _remember(self, pcm: np.ndarray) -> None:
        self._recent.append(pcm)
        self._recent_samples += len(pcm)
        while self._recent_samples - len(self._recent[0]) >= INPUT_RATE * _PREROLL_MS // 1000:
            self._recent_samples -= len(self._recent.popleft())

    # -- decisions → actions --------------------------------------------------------------

    def _on_signal(self, signal: TurnSignal) -> None:
        if signal is TurnSignal.SPEECH_START:
            self._utterance = list(self._recent)
            self._utterance_id += 1
            if self.state in (ConversationState.THINKING, ConversationState.SPEAKING):
                self._speech_while_agent_turn()
        elif signal is TurnSignal.PAUSE:
            if self.state is ConversationState.LISTENING and self.reply is None:
                self.reply = self._new_reply(self._utterance_audio())
                self._judge_when_transcribed(self.reply)
        elif signal is TurnSignal.RESUME:
            pause_ms = self._endpointer.resumed_after_ms
            if self.reply is not None and not self.reply.committed:
                self._drop_once_judged(self.reply, pause_ms)
                self.reply = None
                self._notify("on_speculation", False)
            else:
                self._hesitated(pause_ms, None)
        elif signal is TurnSignal.DISCARD:
            if self._guard.utterance_ended() is BargeInAction.RESUME:
                self._false_barge_in()
            self._utterance = []
        elif signal in (TurnSignal.END_OF_TURN, TurnSignal.EARLY_END_OF_TURN):
            if self._guard.utterance_ended() is BargeInAction.RESUME:
                self._false_barge_in()
            else:
                self._end_of_turn(early=signal is TurnSignal.EARLY_END_OF_TURN)
        elif signal is TurnSignal.CAP:
            self._utterance_capped()

    def _speech_while_agent_turn(self) -> None:
        if self._committed_at_ms is not None:
            went_on_after_ms = self._committed_silence_ms + self._audio_ms - self._committed_at_ms
            if went_on_after_ms < _CUT_OFF_WINDOW_MS:
                self._cut_off(round(went_on_after_ms))
            self._committed_at_ms = None
        if self._guard.speech_started() is BargeInAction.PAUSE:
            self._barge_in_ms = None
            if self._output.pending and not self._output.paused:
                onset = time.monotonic() - self._endpointer.speech_ms / 1000
                self._output.pause(on_silenced=lambda at: self._silenced(at - onset))
            else:
                self._output.pause()

    def _cut_off(self, pause_ms: int) -> None:
        """The user went on `pause_ms` after their last word, too soon to be answering what
        they heard: the turn ended mid-sentence. The silence that ended it widens, and the
        pause counts as one of the user's hesitations."""
        if self._committed_early and self.early_silence is not None:
            self.early_silence.cut_off()
        else:
            self.silence.cut_off()
        self._hesitated(pause_ms, self.reply)

    def _drop_once_judged(self, reply: Reply, pause_ms: int) -> None:
        """Drop a speculation the user has spoken on through, once its transcript tells whether
        the words before the pause sounded finished (what kind of hesitation it was); its LLM
        and TTS work, which is most of what dropping it saves, comes after."""

        def judged(_: object) -> None:
            self._hesitated(pause_ms, reply)
            reply.cancel()

        if reply.transcript.done():
            judged(None)
        else:
            reply.transcript.add_done_callback(judged)

    def _hesitated(self, pause_ms: int, reply: Reply | None) -> None:
        """The user went on after `pause_ms` of silence; `reply` is what was made of the words
        before it, with their transcript (None: they were not transcribed)."""
        sounded_finished = reply is not None and _heard_finished_words(reply.transcript)
        self.hesitations.observe(pause_ms, sounded_finished)
        log.debug(
            "the user went on after %d ms of silence (words %s); turns end at %d ms at the "
            "least, early ones at %d ms",
            pause_ms,
            "sounding finished" if sounded_finished else "hanging or not transcribed",
            self.hesitations.floor_ms,
            self.hesitations.early_floor_ms,
        )

    def _silenced(self, after_onset_s: float) -> None:
        self._barge_in_ms = round(after_onset_s * 1000, 1)

    def _judge_when_transcribed(self, reply: Reply) -> None:
        """End the turn early when the speculative reply's words sound finished, once its
        first audio is ready (committing sooner would not make it heard sooner), provided the
        user is still in the same pause."""
        if self.early_silence is None:
            return
        utterance_id = self._utterance_id

        def still_pending() -> bool:
            return (
                reply is self.reply
                and not reply.committed
                and utterance_id == self._utterance_id
                and self.state is ConversationState.LISTENING
            )

        def end_early(_: object) -> None:
            if still_pending() and self.early_silence is not None:
                for signal in self._endpointer.finish_early(self.early_silence.current_ms):
                    self._on_signal(signal)

        def judge(transcript: asyncio.Future[str]) -> None:
            if _heard_finished_words(transcript) and still_pending():
                reply.ready.add_done_callback(end_early)

        reply.transcript.add_done_callback(judge)

    def _end_of_turn(self, early: bool = False) -> None:
        if self.state is not ConversationState.LISTENING:
            return
        reply = self.reply
        if reply is None:
            reply = self._new_reply(self._utterance_audio())
        else:
            reply.speculative = True
            self._notify("on_speculation", True)
        self._utterance = []
        self.reply = reply
        self.turns += 1
        self._committed_at_ms = self._audio_ms
        self._committed_early = early
        self._committed_silence_ms = self._endpointer.ended_silence_ms
        self._committed_endpoint_ms = (
            self._endpointer.early_silence_ms(self.early_silence.current_ms)
            if early and self.early_silence is not None
            else self._endpointer.end_silence_ms
        )
        reply.commit()
        self._set_state(ConversationState.THINKING)
        self._follower = asyncio.create_task(self._follow(reply, self.turns), name="follow")

    def _utterance_capped(self) -> None:
        """`max_utterance_ms` of speech without an endpoint: while listening, the turn is
        committed with what was said so far (the answer comes, and speech that goes on
        interrupts it as any barge-in does); otherwise the utterance is dropped. Either way its
        audio is let go, so nothing grows with speech that never stops."""
        log.info("utterance capped at %d ms", self._settings.max_utterance_ms)
        if self._guard.utterance_ended() is BargeInAction.RESUME:
            self._false_barge_in()
        elif self.state is ConversationState.LISTENING:
            self._end_of_turn()
            self._committed_at_ms = None  # speech going on after a cap is not a cut-off
        self._utterance = []

    def _interrupt(self) -> None:
        """A confirmed barge-in: silence the agent, drop the reply, keep what was heard."""
        self._output.clear()
        reply, self.reply = self.reply, None
        if self._follower is not None:
            self._follower.cancel()
        if reply is not None:
            reply.cancel()
            heard = reply.heard_text()
            if heard:
                self.history.add_turn(reply.asked, heard)
            else:
                self._carry_over = reply.user_text[-_CARRY_OVER_MAX_CHARS:]
            if reply.committed:
                self._notify("on_turn_end", TurnOutcome.INTERRUPTED, self.steady)
        self._notify("on_barge_in", True, self._barge_in_ms, self.steady)
        self._barge_in_ms = None
        if self.state in (ConversationState.THINKING, ConversationState.SPEAKING):
            self._set_state(ConversationState.INTERRUPTED)
            self._set_state(ConversationState.LISTENING)

    def _false_barge_in(self) -> None:
        self._output.resume()
        self._endpointer.reset()
        self._utterance = []
        self._notify("on_barge_in", False, None, self.steady)

    # -- replies --------------------------------------------------------------------------

    def _utterance_audio(self) -> np.ndarray:
        if not self._utterance:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._utterance)

    def _new_reply(self, audio: np.ndarray) -> Reply:
        prefix, self._carry_over = self._carry_over, ""
        reply = Reply(
            brief=self._services.backpressure() >= BackpressureLevel.BRIEF,
            brief_max_tokens_factor=self._settings.brief_max_tokens_factor,
            first_piece_words=self._settings.first_piece_words,
            transcribe=lambda: self._services.asr.transcribe(audio),
            prefix=prefix,
            history=self.history,
            llm=self._services.llm,
            llm_slot=self._llm_slot,
            tts=self._services.tts,
            voice=self._voice,
            output=self._output,
            send=self._events.send,
        )
        self._replies = [r for r in self._replies if not r.finished]
        self._replies.append(reply)
        return reply

    async def _follow(self, reply: Reply, turn: int) -> None:
        """Walk a committed reply through THINKING → SPEAKING → LISTENING; reset the turn if
        its first audio misses the deadline."""
        steady = self.steady
        try:
            async with asyncio.timeout(self._settings.turn_deadline_ms / 1000):
                user_text = await asyncio.shield(reply.transcript)
                if user_text:
                    self._events.send(transcript_event("user", user_text, final=True))
                first_audio = await asyncio.shield(reply.first_audio)
        except TimeoutError:
            self._reset_turn(reply, steady)
            return
        if first_audio is not None:
            self._set_state(ConversationState.SPEAKING)
            metrics = TurnMetrics(
                turn=turn,
                ttfa_ms=reply.ttfa_ms,
                asr_ms=reply.asr_ms,
                llm_first_token_ms=reply.llm_first_token_ms,
                llm_first_sentence_ms=reply.llm_first_sentence_ms,
                tts_first_chunk_ms=reply.tts_first_chunk_ms,
                endpoint_ms=self._committed_endpoint_ms,
                early_endpoint=self._committed_early,
                speculative=reply.speculative,
                steady=steady,
            )
            self._events.send(metrics.as_event())
            self._notify("on_turn", metrics)
        await reply.played_out
        if reply.error is not None:
            self._notify("on_error", reply.error[0])
            self._notify("on_turn_end", TurnOutcome.FAILED, steady)
        elif reply.spoken_text:
            self._notify("on_turn_end", TurnOutcome.COMPLETED, steady)
        if user_text and reply.spoken_text:
            self.history.add_turn(reply.asked, reply.spoken_text)
            if self._committed_early and self.early_silence is not None:
                self.early_silence.safe()
            elif reply.ttfa_ms is not None and reply.ttfa_ms <= _READY_AT_COMMIT_MS:
                self.silence.safe()
        elif user_text and reply.error is not None:
            self._carry_over = ""
        if self.reply is reply:
            self.reply = None
        if self.state in (ConversationState.THINKING, ConversationState.SPEAKING):
            self._set_state(ConversationState.LISTENING)

    def _reset_turn(self, reply: Reply, steady: bool) -> None:
        """No first audio within the deadline: drop the reply unspoken, listen again."""
        log.warning(
            "turn reset: no first audio %d ms after the end of the turn",
            self._settings.turn_deadline_ms,
        )
        reply.cancel()
        self._output.clear()
        if self.reply is reply:
            self.reply = None
        self._events.send(
            error_event(
                "turn_reset",
                f"no answer within {self._settings.turn_deadline_ms} ms; please say it again",
            )
        )
        self._notify("on_turn_end", TurnOutcome.RESET_NO_AUDIO, steady)
        if self.state in (ConversationState.THINKING, ConversationState.SPEAKING):
            self._set_state(ConversationState.LISTENING)

    def _maybe_partial(self) -> None:
        """Schedule a partial transcript now and then while the user speaks."""
        ep = self._endpointer
        if (
            self.state is not ConversationState.LISTENING
            or not ep.active
            or ep.silence_ms > 0
            or self.reply is not None
            or (self._partial is not None and not self._partial.done())
            or ep.speech_ms < _PARTIAL_MIN_MS
            or self._audio_ms - self._last_partial_ms < self._settings.partial_interval_ms
        ):
            return
        self._last_partial_ms = self._audio_ms
        self._partial = asyncio.create_task(
            self._send_partial(self._utterance_id, self._utterance_audio()), name="partial"
        )

    async def _send_partial(self, utterance_id: int, audio: np.ndarray) -> None:
        text = await self._services.asr.transcribe(audio, partial=True)
        if text and utterance_id == self._utterance_id and self._endpointer.active:
            self._events.send(transcript_event("user", text, final=False))
            if self._settings.llm_prefill and self._services.backpressure() < _BUSY:
                self._read_ahead(self.history.messages(user_turn(self._carry_over, text)))

    # -- plumbing -------------------------------------------------------------------------

    def _set_state(self, target: ConversationState) -> None:
        self.state = transition(self.state, target)
        self._events.send(state_event(target))

    def _notify(self, hook: str, *args: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, hook)(*args)
            except Exception:
                log.exception("observer %r failed in %s", observer, hook)

    def client_report(self, report: dict[str, Any]) -> None:
        """Latencies the client measured (`{"type": "client_metrics", "v2v_ms": …,
        "barge_in_ms": …}`); anything that is not a number is ignored."""

        def number(key: str) -> float | None:
            value = report.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            return None

        v2v, barge_in = number("v2v_ms"), number("barge_in_ms")
        if v2v is not None or barge_in is not None:
            self._notify("on_client_report", v2v, barge_in, self.steady)

    def report_error(self, code: str, message: str) -> None:
        self._events.send(error_event(code, message))
        self._notify("on_error", code)
