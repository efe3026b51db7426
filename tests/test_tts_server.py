"""`parley tts serve` over real HTTP with real Piper synthesis, and the runtime speaking
through it."""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from parley.pcm import INPUT_RATE, SPEECH_RATE, Resampler
from parley_bench.peer import Peer
from parley_tts import TTSError
from parley_tts.config import TTSSettings
from parley_tts.server import create_tts_app
from parley_tts.voices import piper_voice_path
from tests.support.runtime_host import RuntimeHost
from tests.support.threaded_server import ThreadedServer

SENTENCES = [
    "The lighthouse keeper climbed the stairs at dusk.",
    "He checked the lamp and wiped the glass clean.",
    "Far out at sea, a small boat turned toward the light.",
    "The wind was rising and the waves grew tall.",
    "By midnight the boat had reached the harbour safely.",
]


@pytest.fixture(scope="module")
def voice_copy(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second Piper voice (a copy of the packaged one) to exercise on-demand loading."""
    folder = tmp_path_factory.mktemp("voices")
    source = piper_voice_path("en_US-joe-medium")
    (folder / "joe-copy.onnx").symlink_to(source)
    (folder / "joe-copy.onnx.json").symlink_to(f"{source}.json")
    return str(folder / "joe-copy.onnx")


@pytest.fixture(scope="module")
def tts(voice_copy: str) -> Iterator[ThreadedServer]:
    settings = TTSSettings(
        max_streams=4, max_queue=4, max_input_chars=2000, piper_voices={"joe-copy": voice_copy}
    )
    with ThreadedServer(create_tts_app(settings)) as server:
        yield server


@pytest.fixture
async def http(tts: ThreadedServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tts.url, timeout=60) as client:
        yield client


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get(http.base_url.copy_with(path="/metrics"))).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def speak(text: str, **fields: Any) -> dict[str, Any]:
    return {"input": text, "response_format": "pcm", **fields}


def transcribe(host: RuntimeHost, pcm24: np.ndarray) -> str:
    resampler = Resampler(INPUT_RATE)
    pcm16 = np.concatenate([resampler.pcm(pcm24, SPEECH_RATE), resampler.flush()])
    return host.models.asr.transcribe_sync(pcm16)


async def test_pcm_is_real_speech_at_the_documented_rate(
    http: httpx.AsyncClient, runtime_host: RuntimeHost
) -> None:
    response = await http.post("/audio/speech", json=speak("The quick brown fox jumps."))
    assert response.status_code == 200
    assert response.headers["x-sample-rate"] == str(SPEECH_RATE)
    assert response.headers["content-type"] == "audio/pcm"
    pcm = np.frombuffer(response.content, dtype="<i2")
    assert 0.8 < len(pcm) / SPEECH_RATE < 5
    heard = transcribe(runtime_host, pcm).lower()
    assert "fox" in heard or "brown" in heard, heard


async def test_wav_has_a_streaming_header(http: httpx.AsyncClient) -> None:
    response = await http.post("/audio/speech", json=speak("Hello.", response_format="wav"))
    body = response.content
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE" and body[36:40] == b"data"
    channels, rate = struct.unpack("<HI", body[22:28])
    assert (channels, rate) == (1, SPEECH_RATE)
    assert len(body) > 44 + SPEECH_RATE // 4


async def test_first_audio_leaves_before_synthesis_is_done(http: httpx.AsyncClient) -> None:
    text = " ".join(SENTENCES * 2)
    started = time.monotonic()
    first_at = None
    async with http.stream("POST", "/audio/speech", json=speak(text)) as response:
        async for chunk in response.aiter_bytes():
            if chunk and first_at is None:
                first_at = time.monotonic()
    done_at = time.monotonic()
    assert first_at is not None
    # Streaming sentence by sentence: the first bytes come long before the last.
    assert first_at - started < (done_at - started) / 2


async def test_client_disconnect_stops_synthesis(http: httpx.AsyncClient) -> None:
    text = " ".join(SENTENCES * 8)  # 40 sentences
    before = await metric(http, 'parley_tts_sentences_total{model="piper"}')
    async with http.stream("POST", "/audio/speech", json=speak(text)) as response:
        async for chunk in response.aiter_bytes():
            if chunk:
                break  # hang up after the first audio
    await asyncio.sleep(1.5)
    done = await metric(http, 'parley_tts_sentences_total{model="piper"}') - before
    assert done <= 4, f"{done} of 40 sentences synthesized after the client left"
    assert await metric(http, 'parley_tts_requests_total{model="piper",outcome="cancelled"}') >= 1
    assert await metric(http, "parley_tts_streams_active") == 0
    assert (await http.post("/audio/speech", json=speak("Still here."))).status_code == 200


async def test_concurrent_streams_all_complete(http: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(http.post("/audio/speech", json=speak(sentence)) for sentence in SENTENCES[:4])
    )
    assert [r.status_code for r in responses] == [200] * 4
    assert all(len(r.content) > SPEECH_RATE for r in responses)  # > 0.5 s of audio each


async def test_voices_load_on_demand(http: httpx.AsyncClient, tts: ThreadedServer) -> None:
    listed = (await http.get("/models")).json()["data"]
    assert listed[0]["id"] == "piper"
    assert set(listed[0]["voices"]) == {"en_US-joe-medium", "joe-copy"}
    response = await http.post("/audio/speech", json=speak("Another voice.", voice="joe-copy"))
    assert response.status_code == 200 and len(response.content) > 0
    ready = (await http.get(f"{tts.root}/readyz")).json()
    assert "piper:joe-copy" in ready["resident"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (speak(""), 422, "at least 1 character"),
        (speak("   "), 422, "input is empty"),
        (speak("x" * 2001), 413, "limit is 2000"),
        (speak("hi", voice="nobody"), 404, "en_US-joe-medium"),
        (speak("hi", model="gpt-5-tts"), 404, "known models: ['piper']"),
        (speak("hi", response_format="ogg"), 422, "'flac', 'wav' or 'pcm'"),
        (speak("hi", speed=9), 422, "less than or equal to 4"),
    ],
)
async def test_bad_requests(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = await http.post("/audio/speech", json=body)
    assert response.status_code == status
    assert fragment in response.text


async def test_backend_failure_mid_stream_aborts_the_response_and_is_counted(
    http: httpx.AsyncClient, tts: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = tts.app.state.manager.loaded("piper:en_US-joe-medium")
    real = backend.synthesize

    async def failing(text: str, voice: str | None = None, speed: float = 1.0):  # type: ignore[no-untyped-def]
        async for chunk in real(text, voice, speed):
            yield chunk
        raise TTSError("scripted backend failure")

    before = await metric(http, 'parley_tts_stream_errors_total{model="piper"}')
    monkeypatch.setattr(backend, "synthesize", failing)
    received = 0
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        async with http.stream("POST", "/audio/speech", json=speak(" ".join(SENTENCES))) as got:
            assert got.status_code == 200
            async for chunk in got.aiter_bytes():
                received += len(chunk)
    monkeypatch.undo()
    assert 0 < received < 2 * SPEECH_RATE * 3  # the first sentence only
    assert await metric(http, 'parley_tts_stream_errors_total{model="piper"}') == before + 1
    assert (await http.post("/audio/speech", json=speak("Recovered."))).status_code == 200


async def test_saturation_answers_503_with_retry_after() -> None:
    with ThreadedServer(create_tts_app(TTSSettings(max_streams=1, max_queue=0))) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            long_text = " ".join(SENTENCES * 8)
            async with http.stream("POST", "/audio/speech", json=speak(long_text)) as busy:
                async for chunk in busy.aiter_bytes():
                    if chunk:
                        break
                refused = await http.post("/audio/speech", json=speak("Me too."))
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "2"
                assert "saturated" in refused.json()["detail"]
            await asyncio.sleep(0.5)
            assert (await http.post("/audio/speech", json=speak("Now."))).status_code == 200


@pytest.mark.e2e
async def test_runtime_converses_through_the_tts_server(
    runtime_host: RuntimeHost, llm_url: str, tts: ThreadedServer
) -> None:
    from tests.test_conversation import ask, words

    app = runtime_host.start(llm_url=llm_url, tts_url=tts.url, llm_temperature=0.0)
    peer = Peer(app.url)
    try:
        await peer.connect()
        await peer.wait_state("listening", 10)
        asked, _ = await ask(peer, "How many legs does a spider have?")
        said = next(e["text"] for _, e in peer.events if e["type"] == "response" and e["final"])
        resampler = Resampler(INPUT_RATE)
        audio48 = peer.agent.audio(since=asked)
        pcm16 = np.concatenate([resampler.pcm(audio48, 48_000), resampler.flush()])
        heard = runtime_host.models.asr.transcribe_sync(pcm16)
        assert words(heard) & words(said), f"audio {heard!r} does not match the reply {said!r}"
    finally:
        await peer.close()
        runtime_host.stop(app)
