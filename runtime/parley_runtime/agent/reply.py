"""One agent answer: transcript → LLM → sentences → TTS → 48 kHz audio on the output track.

A reply may start speculatively, at the first pause, before the turn is committed. Until
`commit()` every outward effect (audio, marks, events) is held back, so a speculation that
is cancelled leaves no trace; after it, effects happen as they are produced. Before the
commit a speculation goes only as far as the first piece's audio (a clause, a sentence or
its first words: `SentenceChunker`): the rest would be work thrown away whenever the user
resumes speaking.

A `brief` reply (the pod is under backpressure, level BRIEF or above) asks the LLM for fewer
tokens and adds a brevity instruction after the user's words (`asked`, which the history
keeps); the audio itself is never degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from parley.pcm import OUTPUT_RATE, Resampler, trim_leading_silence, trim_trailing_silence
from parley_runtime.audio import AgentAudioOutput, PlaybackSegment
from parley_runtime.config import BRIEF_INSTRUCTION
from parley_runtime.events import error_event, response_event
from parley_runtime.llm import ChatClient, ChatHistory, LLMError
from parley_tts import SentenceChunker, TTSError, TTSService
from parley_tts.chunker import ends_mid_phrase

log = logging.getLogger(__name__)


def heard_text(segments: list[PlaybackSegment]) -> str:
    """What the user actually heard: whole sentences played, plus the played share of the
    sentence that was cut (by words)."""
    heard = []
    for segment in segments:
        if segment.played == 0:
            break
        words = segment.text.split()
        if segment.heard_fraction >= 1.0:
            heard.extend(words)
            continue
        heard.extend(words[: int(len(words) * segment.heard_fraction)])
        break
    return " ".join(heard)


def repeats(sentence: str, said: list[str]) -> bool:
    """`sentence` is one of `said`, whatever the case, spacing and punctuation."""

    def words(text: str) -> list[str]:
        return re.findall(r"[\w']+", text.lower())

    these = words(sentence)
    return bool(these) and these in [words(earlier) for earlier in said]


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


def user_turn(carried_over: str, transcript: str) -> str:
    """The user's words as the LLM is asked them: what an interruption carried over from the
    turn before it, then the transcript."""
    return " ".join(part for part in (carried_over, transcript) if part).strip()


class Reply:
    def __init__(
        self,
        *,
        transcribe: Callable[[], Awaitable[str]],
        prefix: str,
        history: ChatHistory,
        llm: ChatClient,
        tts: TTSService,
        voice: str | None,
        output: AgentAudioOutput,
        send: Callable[[dict[str, Any]], None],
        brief: bool = False,
        brief_max_tokens_factor: float = 0.7,
        first_piece_words: int = 0,
        llm_slot: int | None = None,
    ) -> None:
        self._transcribe = transcribe
        self._first_piece_words = first_piece_words
        self.brief = brief
        self._brief_factor = brief_max_tokens_factor
        self._prefix = prefix
        self._history = history
        self._llm = llm
        self._llm_slot = llm_slot
        self._tts = tts
        self._voice = voice
        self._output = output
        self._send = send
        self._held: list[Callable[[], None]] = []
        self._committed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.transcript: asyncio.Future[str] = loop.create_future()
        self.first_audio: asyncio.Future[float | None] = loop.create_future()
        #: Done once the first audio is synthesized (held until commit) or the reply ended
        #: without any: from then on a commit is heard at once.
        self.ready: asyncio.Future[None] = loop.create_future()
        self.played_out: asyncio.Future[None] = loop.create_future()
        self.committed = False
        self.speculative = False
        self.committed_at: float | None = None
        self.user_text = ""
        #: The user's turn as the LLM was asked it: `user_text`, plus the brevity instruction
        #: under backpressure. The history keeps it so, because the LLM server reads each
        #: request from where it stops matching what it has cached: in the system prompt,
        #: the instruction made every level change read the whole conversation again (up to
        #: two seconds a turn with four sessions on 2 cores, benchmarks.md run 23); dropped
        #: from the history, it would make the next turn read the last one again.
        self.asked = ""
        self.segments: list[PlaybackSegment] = []
        self.error: tuple[str, str] | None = None
        self.asr_ms: float | None = None
        self.llm_first_token_ms: float | None = None
        self.llm_first_sentence_ms: float | None = None
        self.tts_first_chunk_ms: float | None = None
        self._task = asyncio.create_task(self._run(), name="reply")

    # -- control --------------------------------------------------------------------------

    def commit(self) -> None:
        self._committed.set()
        self.committed = True
        self.committed_at = time.monotonic()
        held, self._held = self._held, []
        for effect in held:
            effect()

    def cancel(self) -> None:
        """Stop the reply; once (a second `Task.cancel` would also cancel its unwinding)."""
        if self._task.cancelling():
            return
        self._task.cancel()
        for future in (self.transcript, self.first_audio, self.ready, self.played_out):
            future.cancel()

    @property
    def finished(self) -> bool:
        """The reply's task is over (done, failed or cancelled and unwound)."""
        return self._task.done()

    async def wait_closed(self) -> None:
        """Wait until the reply's task is over, without cancelling it or raising what ended
        it; cancelling the waiter cancels only the wait."""
        await asyncio.wait({self._task})

    @property
    def spoken_text(self) -> str:
        return " ".join(s.text for s in self.segments)

    def heard_text(self) -> str:
        return heard_text(self.segments)

    @property
    def ttfa_ms(self) -> float | None:
        if not self.first_audio.done() or self.first_audio.cancelled():
            return None
        first = self.first_audio.result()
        if first is None or self.committed_at is None:
            return None
        return round((first - self.committed_at) * 1000, 1)

    # -- pipeline -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._pipeline()
        except Exception as exc:  # a bug or a model failure must not leave waiters hanging
            log.exception("reply failed")
            self._fail("internal", repr(exc))
            if not self.transcript.done():
                self.transcript.set_result(self._prefix)
            self._do(self._finish_without_audio)
        finally:
            self._set_ready()

    async def _pipeline(self) -> None:
        started = time.monotonic()
        text = await self._transcribe()
        self.asr_ms = _ms(started)
        self.user_text = user_turn(self._prefix, text)
        self.asked = f"{self.user_text}\n\n{BRIEF_INSTRUCTION}" if self.brief else self.user_text
        self.transcript.set_result(self.user_text)
        if not text:
            self._do(self._finish_without_audio)
            return
        resampler = Resampler(OUTPUT_RATE)
        try:
            await self._answer(resampler)
        except (LLMError, TTSError) as exc:
            code = "llm_unavailable" if isinstance(exc, LLMError) else "tts_unavailable"
            log.warning("turn failed (%s): %s", code, exc)
            self._fail(code, str(exc))
        last = self.segments[-1] if self.segments else None
        tail = resampler.flush()
        self._do(lambda: self._end_audio(tail, last))

    async def _answer(self, resampler: Resampler) -> None:
        chunker = SentenceChunker(first_words=self._first_piece_words)
        requested = time.monotonic()
        messages = self._history.messages(self.asked)
        max_tokens = (
            max(8, round(self._llm.max_tokens * self._brief_factor)) if self.brief else None
        )
        async with contextlib.aclosing(
            self._llm.stream(messages, max_tokens, self._llm_slot)
        ) as deltas:
            async for delta in deltas:
                if self.llm_first_token_ms is None:
                    self.llm_first_token_ms = _ms(requested)
                for sentence in chunker.push(delta):
                    if not await self._speak_unless_repeated(sentence, resampler, requested):
                        return
        for sentence in chunker.flush():
            await self._speak_unless_repeated(sentence, resampler, requested)

    async def _speak_unless_repeated(
        self, sentence: str, resampler: Resampler, requested: float
    ) -> bool:
        """Speak `sentence`, unless the answer has said it already: a small model that starts
        looping ("It's called milk. It's called milk. ...") goes on until max_tokens, so the
        answer ends there and the LLM request is closed. False when it ended."""
        if repeats(sentence, [segment.text for segment in self.segments]):
            log.info("answer stopped: the LLM said %r again", sentence)
            return False
        await self._speak(sentence, resampler, requested)
        return True

    async def _speak(self, sentence: str, resampler: Resampler, requested: float) -> None:
        if self.llm_first_sentence_ms is None:
            self.llm_first_sentence_ms = _ms(requested)
        first_of_reply = not self.segments
        if not first_of_reply:
            await self._committed.wait()
        after_seam = bool(self.segments) and ends_mid_phrase(self.segments[-1].text)
        segment = PlaybackSegment(sentence)
        self.segments.append(segment)
        spoken = self.spoken_text
        self._do(lambda: self._send(response_event(spoken, final=False)))
        started = time.monotonic()
        chunks = self._voiced(sentence, first_of_reply or after_seam, ends_mid_phrase(sentence))
        async for pcm in chunks:
            if first_of_reply:
                self.tts_first_chunk_ms = _ms(started)
                self._do(lambda: self._output.mark(self._on_first_audio))
                self._set_ready()
                first_of_reply = False
            audio = resampler.pcm(pcm, self._tts.sample_rate)
            self._do(lambda audio=audio: self._output.push(audio, segment))  # type: ignore[misc]

    async def _voiced(
        self, text: str, trim_lead: bool, trim_tail: bool
    ) -> AsyncIterator[np.ndarray]:
        """The voice's audio for `text`, without the silence before it (`trim_lead`: the
        reply's first audio, or a piece that goes on from a phrase cut between two words) or
        after it (`trim_tail`: such a cut), so the seam sounds like the gap between words."""
        rate = self._tts.sample_rate
        held = None
        async for pcm in self._tts.synthesize(text, self._voice):
            if trim_lead:
                pcm = trim_leading_silence(pcm, rate)
                if pcm.size == 0:
                    continue
                trim_lead = False
            if not trim_tail:
                yield pcm
                continue
            if held is not None:
                yield held
            held = pcm
        if held is not None and (tail := trim_trailing_silence(held, rate)).size:
            yield tail

    # -- effects (held until commit) ------------------------------------------------------

    def _do(self, effect: Callable[[], None]) -> None:
        if self.committed:
            effect()
        else:
            self._held.append(effect)

    def _fail(self, code: str, message: str) -> None:
        self.error = (code, message)
        event = error_event(code, message)
        self._do(lambda: self._send(event))

    def _end_audio(self, tail: Any, last: PlaybackSegment | None) -> None:
        if last is None:
            self._finish_without_audio()
            return
        self._output.push(tail, last)
        self._output.flush(last)
        self._send(response_event(self.spoken_text, final=True))
        self._output.mark(self._on_played_out)

    def _finish_without_audio(self) -> None:
        if not self.first_audio.done():
            self.first_audio.set_result(None)
        if not self.played_out.done():
            self.played_out.set_result(None)

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _on_first_audio(self) -> None:
        if not self.first_audio.done():
            self.first_audio.set_result(time.monotonic())

    def _on_played_out(self) -> None:
        self._finish_without_audio()
