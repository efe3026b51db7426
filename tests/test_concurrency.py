"""Concurrency in the voice runtime: what a session's tasks do when it closes, when one of them
fails, and when several sessions share one client.

Unit level with the runtime's real objects (`Conversation`, `Session`, `SessionManager`, the
reaper, `HTTPSpeechClient` over a real socket). The models are replaced by small doubles
(a loudness VAD, an ASR that never answers, a VAD that always fails), so each test decides
exactly what happens and when; nothing here waits on a clock to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry

from parley.pcm import INPUT_RATE, OUTPUT_FRAME_SAMPLES, VOICED_PEAK
from parley_runtime import RuntimeSettings
from parley_runtime.agent import Conversation, Services
from parley_runtime.asr import SpeechRecognizer
from parley_runtime.audio import AgentAudioOutput, audio_frame
from parley_runtime.events import EVENTS_LABEL, EventChannel
from parley_runtime.llm import ChatClient
from parley_runtime.sessions import FrameFault, InboundFaults, Session, SessionManager
from parley_runtime.signals import RuntimeMetrics
from parley_runtime.turns import ConversationState
from parley_runtime.vad import WINDOW, SileroVAD
from parley_runtime.webrtc import peer_connection
from parley_tts import HTTPSpeechClient
from tests.support.threaded_server import ThreadedServer

#: Nothing listens here: the clients built on it are never asked anything.
UNUSED_URL = "http://127.0.0.1:9/v1"


# -- doubles for the models -------------------------------------------------------------------


class LoudnessVAD:
    """Speech is whatever is louder than `VOICED_PEAK`, one probability per 32 ms window, as
    Silero reports it."""

    def stream(self) -> LoudnessVAD.Stream:
        return LoudnessVAD.Stream()

    class Stream:
        def __init__(self) -> None:
            self._pending = np.zeros(0, dtype=np.int16)

        def feed(self, pcm: np.ndarray) -> list[float]:
            self._pending = np.concatenate([self._pending, pcm])
            probs = []
            while len(self._pending) >= WINDOW:
                window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
                probs.append(0.9 if np.abs(window.astype(np.int32)).max() > VOICED_PEAK else 0.0)
            return probs


class BrokenVAD:
    """The first `failures` frames fed raise, as an ONNX session in a bad state would; after
    that it hears silence. `failed` counts the frames it failed on."""

    def __init__(self, failures: float = float("inf")) -> None:
        self.failures = failures
        self.failed = 0

    def stream(self) -> BrokenVAD:
        return self

    def feed(self, pcm: np.ndarray) -> list[float]:
        if self.failed < self.failures:
            self.failed += 1
            raise RuntimeError("onnxruntime: invalid state")
        return [0.0]


class StuckASR:
    """Transcription that never finishes; cancelled, it takes several turns of the event loop
    to unwind (as a worker thread or an HTTP stream does), then says so."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.unwound = False

    async def transcribe(self, pcm: np.ndarray, partial: bool = False) -> str:
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            for _ in range(20):
                await asyncio.sleep(0)
            self.unwound = True
        return ""


@contextlib.asynccontextmanager
async def services(vad: object, asr: object = None) -> AsyncIterator[Services]:
    llm = ChatClient(UNUSED_URL, "unused")
    tts = HTTPSpeechClient(UNUSED_URL)
    try:
        yield Services(asr=cast(SpeechRecognizer, asr), vad=cast(SileroVAD, vad), tts=tts, llm=llm)
    finally:
        await llm.aclose()
        await tts.aclose()


def frames16(ms: int, loud: bool) -> Iterator[np.ndarray]:
    """`ms` of 16 kHz audio in 20 ms frames: loud throughout, or digital silence."""
    samples = INPUT_RATE // 50
    for _ in range(ms // 20):
        yield np.full(samples, 3000 if loud else 0, dtype=np.int16)


# -- Conversation.close ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("then", "state"),
    [
        ((600, False), ConversationState.THINKING),  # the turn ends: the reply is committed
        ((100, True), ConversationState.LISTENING),  # the user goes on: the reply is dropped
    ],
    ids=["committed-reply", "dropped-reply"],
)
async def test_close_returns_only_after_the_reply_has_unwound(
    then: tuple[int, bool], state: ConversationState
) -> None:
    asr = StuckASR()
    async with services(LoudnessVAD(), asr) as shared:
        conversation = Conversation(shared, RuntimeSettings(), AgentAudioOutput(), EventChannel())
        conversation.start()
        for pcm in [*frames16(400, loud=True), *frames16(200, loud=False)]:
            conversation.feed(pcm)  # a pause: a speculative reply starts
        await asyncio.wait_for(asr.started.wait(), 10)
        for pcm in frames16(*then):
            conversation.feed(pcm)
        assert conversation.state is state

        await conversation.close()

        assert asr.unwound, "close returned while the reply was still unwinding"
        assert conversation.state is ConversationState.ENDED
        left = [t.get_name() for t in asyncio.all_tasks() if t.get_name() in ("reply", "follow")]
        assert left == []


# -- sessions: the reaper and the inbound audio path --------------------------------------------


class RecordingChannel:
    """The client's end of the `events` data channel: open, never backed up, keeps all it gets."""

    label = EVENTS_LABEL
    readyState = "open"
    bufferedAmount = 0

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, message: str) -> None:
        self.events.append(json.loads(message))

    def on(self, event: str, handler: Callable[..., object]) -> None:
        pass

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


class Microphone(MediaStreamTrack):
    """An inbound track of `frames` 20 ms frames of silence as fast as they are read, then the
    end of the track; `exhausted` is set when the last one has been read."""

    kind = "audio"

    def __init__(self, frames: int) -> None:
        super().__init__()
        self._left = frames
        self._pts = 0
        self.exhausted = asyncio.Event()

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(0)
        if self._left == 0:
            self.exhausted.set()
            raise MediaStreamError
        self._left -= 1
        self._pts += OUTPUT_FRAME_SAMPLES
        return audio_frame(np.zeros(OUTPUT_FRAME_SAMPLES, dtype=np.int16), self._pts)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@contextlib.asynccontextmanager
async def session_manager(
    vad: object, registry: CollectorRegistry, **settings: Any
) -> AsyncIterator[SessionManager]:
    async with services(vad) as shared:
        manager = SessionManager(
            shared,
            RuntimeSettings(**settings),
            [],
            RuntimeMetrics(registry),
        )
        try:
            yield manager
        finally:
            await manager.close()


async def new_session(manager: SessionManager) -> Session:
    """A session whose client only listens: aiortc announces no inbound track of its own, so
    a test plays the user's microphone into it (the `track` event, as aiortc emits it)."""
    pc = peer_connection([])
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel(EVENTS_LABEL)
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    session, _ = await manager.create(pc.localDescription.sdp)
    return session


def reaped(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("parley_sessions_reaped_total", {"reason": reason}) or 0.0


async def test_reaper_goes_on_after_a_session_fails_to_close(
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with session_manager(LoudnessVAD(), registry, connect_timeout_s=0.01) as manager:
        broken, fine = await new_session(manager), await new_session(manager)
        close_peer = broken.pc.close

        async def failing_close() -> None:
            raise RuntimeError("transport already torn down")

        monkeypatch.setattr(broken.pc, "close", failing_close)
        try:
            manager.start_reaper(interval_s=0.01)
            assert await manager.wait_empty(5), "the reaper stopped at the failing session"
            assert fine.closed.is_set()

            later = await new_session(manager)  # the reaper is still running
            assert await manager.wait_empty(5), "the reaper stopped after its first failure"
            assert later.closed.is_set()
        finally:
            await close_peer()

    assert reaped(registry, "never connected") == 3
    failures = [r for r in caplog.records if r.exc_info and "transport already" in str(r.exc_info)]
    assert len(failures) == 1


async def test_persistent_inbound_audio_failure_is_reported_once_and_ends_the_session(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    vad = BrokenVAD()
    async with session_manager(vad, registry) as manager:
        manager.start_reaper(interval_s=0.01)
        session = await new_session(manager)
        client = RecordingChannel()
        session.pc.emit("datachannel", client)
        microphone = Microphone(frames=150)  # 3 s
        session.pc.emit("track", microphone)

        exhausted = asyncio.create_task(microphone.exhausted.wait())
        emptied = asyncio.create_task(manager.wait_empty(10))
        await asyncio.wait([exhausted, emptied], return_when=asyncio.FIRST_COMPLETED)
        exhausted.cancel()
        emptied.cancel()

        errors = client.of_type("error")
        assert [e["code"] for e in errors] == ["audio_failed"], f"{len(errors)} error events"
        assert "reconnect" in errors[0]["message"]
        assert client.events[-2:] == [errors[0], {"type": "state", "state": "ended"}]
        assert manager.sessions == {}
        assert vad.failed == 50, "gave up after 1 s of audio (50 frames of 20 ms)"
    tracebacks = [r for r in caplog.records if r.name == "parley_runtime.sessions" and r.exc_info]
    assert len(tracebacks) == 1
    assert reaped(registry, "audio processing failed") == 1


async def test_brief_inbound_audio_failure_is_logged_once_and_the_session_goes_on(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    vad = BrokenVAD(failures=10)
    async with session_manager(vad, registry) as manager:
        session = await new_session(manager)
        client = RecordingChannel()
        session.pc.emit("datachannel", client)
        microphone = Microphone(frames=60)
        session.pc.emit("track", microphone)
        await asyncio.wait_for(microphone.exhausted.wait(), 10)

        assert client.of_type("error") == []
        assert session.conversation.state is ConversationState.LISTENING
        assert manager.get(session.id) is session
    tracebacks = [r for r in caplog.records if r.name == "parley_runtime.sessions" and r.exc_info]
    assert len(tracebacks) == 1
    assert any("recovered after 10 failed frames" in r.getMessage() for r in caplog.records)


def test_intermittent_inbound_failures_are_logged_one_in_500_and_never_end_the_session() -> None:
    faults = InboundFaults()
    verdicts = []
    for _ in range(1000):  # every other frame fails, for 40 s
        verdicts.append(faults.failed())
        faults.recovered()
    assert verdicts.count(FrameFault.LOG) == 2
    assert FrameFault.GIVE_UP not in verdicts


# -- the HTTP speech client ----------------------------------------------------------------------

#: What the speech server below streams: half a second of a tone, at each voice's own rate.
TONE_S = 0.5
VOICE_RATES = {"narrow": 16_000, "wide": 24_000}


def speech_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/audio/speech")
    async def speak(request: Request) -> StreamingResponse:
        rate = VOICE_RATES[(await request.json())["voice"]]
        t = np.arange(int(rate * TONE_S)) / rate
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(pcm), 2000):
                yield pcm[start : start + 2000]

        headers = {"X-Sample-Rate": str(rate)}
        return StreamingResponse(chunks(), media_type="audio/pcm", headers=headers)

    return app


@pytest.fixture(scope="module")
def speech_server() -> Iterator[ThreadedServer]:
    with ThreadedServer(speech_app()) as server:
        yield server


async def test_concurrent_speech_streams_each_keep_their_own_rate(
    speech_server: ThreadedServer,
) -> None:
    """Two sessions share the runtime's one client; each reads its chunks at the rate the
    client states (`sample_rate`), as `Reply` does, while the other's stream is open."""
    client = HTTPSpeechClient(speech_server.url)
    try:
        streams = {voice: client.synthesize("Hello.", voice) for voice in VOICE_RATES}
        seconds = dict.fromkeys(VOICE_RATES, 0.0)
        for voice, stream in streams.items():  # both responses have started
            seconds[voice] += len(await anext(stream)) / client.sample_rate
        for voice, stream in streams.items():
            async for pcm in stream:
                seconds[voice] += len(pcm) / client.sample_rate
    finally:
        await client.aclose()
    assert seconds == pytest.approx(dict.fromkeys(VOICE_RATES, TONE_S), abs=0.01)
