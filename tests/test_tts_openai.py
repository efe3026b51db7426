"""`parley tts serve` as a drop-in OpenAI speech endpoint: the official `openai` SDK against a
real server process, every response format decoded with PyAV, and a backend that fails
mid-stream seen as an error by the SDK and by the runtime.

The mid-stream failure is a real fault, not a hook: a Piper voice whose `.onnx.json` maps one
phoneme (`ɐ`) to an id beyond the model's embedding table, as a config written for another
model would. Piper loads and warms it ("Hello.") and speaks every sentence without that
phoneme; the first sentence that has it fails inside onnxruntime (`Gather` index out of
bounds), after the audio of the sentences before it has been sent.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
from openai.types.audio import speech_create_params

from parley.pcm import SPEECH_RATE
from parley_bench.peer import Peer
from parley_tts.catalog import Catalog, CatalogError
from parley_tts.config import TTSSettings
from parley_tts.openai_names import OPENAI_MODELS, OPENAI_VOICES
from parley_tts.voices import piper_voice_path
from tests.support.runtime_host import RuntimeHost, free_port
from tests.support.scripted_llm import ScriptedLLMServer
from tests.support.talk import errors_after, turn

REPO = Path(__file__).resolve().parents[1]
TEXT = "The quick brown fox jumps over the lazy dog. Then it naps."
# The scripted LLM's answer: its second sentence has the broken voice's phoneme, its first not.
FAILS_AFTER_ONE_SENTENCE = "Paris is the capital of France. It is a lovely city to visit."
Format = typing.Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
CONTENT_TYPES: dict[Format, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
CODECS = {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac", "wav": "pcm_s16le"}


@pytest.fixture(scope="module")
def broken_voice(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("voices")
    source = piper_voice_path("en_US-joe-medium")
    config = json.loads(Path(f"{source}.json").read_text())
    config["phoneme_id_map"]["ɐ"] = [10_000]
    (folder / "broken.onnx").symlink_to(source)
    (folder / "broken.onnx.json").write_text(json.dumps(config))
    return str(folder / "broken.onnx")


@pytest.fixture(scope="module")
def tts_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tts") / "serve.log"


@pytest.fixture(scope="module")
def tts_server(broken_voice: str, tts_log: Path) -> Iterator[str]:
    """A real `parley tts serve` process with the default settings and one extra voice,
    logging to `tts_log`."""
    port = free_port()
    env = {**os.environ, "PARLEY_TTS_PIPER_VOICES": json.dumps({"broken": broken_voice})}
    command = [sys.executable, "-m", "parley", "tts", "serve", "--port", str(port)]
    with tts_log.open("w") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not ready(url):
            assert process.poll() is None, tts_log.read_text()
            assert time.monotonic() < deadline, tts_log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def stream_errors(tts_server: str) -> float:
    metrics = httpx.get(f"{tts_server}/metrics").text
    found = re.search(r'^parley_tts_stream_errors_total\{model="piper"\} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def client(tts_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tts_server}/v1", api_key="unused", max_retries=0)


def decode(data: bytes, fmt: Format) -> tuple[str, np.ndarray, int]:
    """The codec, the samples (mono float) and the rate of a response body."""
    if fmt == "pcm":
        return "pcm", np.frombuffer(data, dtype="<i2") / 32768, SPEECH_RATE
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
        return stream.codec_context.name, np.concatenate(frames).astype(np.float64), rate


@pytest.fixture(scope="module")
def pcm_seconds(client: openai.OpenAI) -> float:
    response = client.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm"
    )
    return len(response.content) / 2 / SPEECH_RATE


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
def test_every_format_decodes_to_the_whole_text(
    client: openai.OpenAI, pcm_seconds: float, fmt: Format
) -> None:
    response = client.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format=fmt
    )
    assert response.response.headers["content-type"] == CONTENT_TYPES[fmt]
    codec, samples, rate = decode(response.content, fmt)
    assert codec.startswith(CODECS.get(fmt, "pcm")), codec
    assert rate == (48_000 if fmt == "opus" else SPEECH_RATE)  # Opus decoders give 48 kHz
    seconds = len(samples) / rate
    # Piper's durations vary a little between runs; encoders add a frame or two of padding.
    assert abs(seconds - pcm_seconds) < 0.1 * pcm_seconds + 0.1, (seconds, pcm_seconds)
    assert np.sqrt(np.mean(samples**2)) > 0.02  # speech, not silence


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_model_names_speak_with_the_default_model(client: openai.OpenAI, model: str) -> None:
    response = client.audio.speech.create(
        model=model, voice="nova", input="Good morning.", response_format="pcm"
    )
    assert len(response.content) > SPEECH_RATE // 2  # over a quarter second


def test_streaming_response_arrives_sentence_by_sentence(
    client: openai.OpenAI, pcm_seconds: float
) -> None:
    text = " ".join([TEXT] * 4)
    started = time.monotonic()
    arrivals: list[tuple[float, int]] = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="mp3"
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        body = bytearray()
        for chunk in response.iter_bytes():
            arrivals.append((time.monotonic() - started, len(chunk)))
            body += chunk
    first, last = arrivals[0][0], arrivals[-1][0]
    assert len(arrivals) >= 4 and first < last / 2, arrivals
    _, samples, rate = decode(bytes(body), "mp3")
    assert abs(len(samples) / rate - 4 * pcm_seconds) < 0.4 * pcm_seconds + 0.2


def test_unknown_voice_is_404_naming_the_known_ones(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="unknown voice 'nobody'") as refused:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    detail = refused.value.response.json()["detail"]
    assert "en_US-joe-medium" in detail and "broken" in detail and "alloy" in detail


def test_unknown_model_is_404_naming_the_known_ones(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="unknown model 'gpt-5-tts'") as refused:
        client.audio.speech.create(model="gpt-5-tts", voice="alloy", input="Hi.")
    detail = refused.value.response.json()["detail"]
    assert "'piper'" in detail and "tts-1" in detail


def test_instructions_and_unknown_fields_are_accepted_and_logged(
    client: openai.OpenAI, tts_log: Path
) -> None:
    response = client.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice={"id": "en_US-joe-medium"},
        input="Hello there.",
        instructions="Speak like a pirate.",
        stream_format="audio",
        speed=1.5,
        response_format="wav",
        extra_body={"seed": 7},
    )
    assert response.response.status_code == 200 and len(response.content) > 44 + SPEECH_RATE // 2
    logged = tts_log.read_text()
    assert "ignoring the request field 'instructions'" in logged
    assert "ignoring the request field 'seed'" in logged


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"stream_format": "sse"}, "stream_format 'sse' is not supported"),
        ({"speed": 9}, "speed: Input should be less than or equal to 4"),
        ({"input": ""}, "input: String should have at least 1 character"),
    ],
)
def test_refusals_give_the_sdk_their_reason(
    client: openai.OpenAI, fields: dict[str, typing.Any], reason: str
) -> None:
    request = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "Hi.", **fields}
    with pytest.raises(openai.UnprocessableEntityError, match=reason):
        client.audio.speech.create(**request)


def test_backend_failure_mid_stream_is_an_error_for_the_client(
    client: openai.OpenAI, tts_server: str
) -> None:
    errors_before = stream_errors(tts_server)
    received = 0
    # The transport's own exception (httpx's, or httpx2's in newer SDKs), as the SDK passes it.
    with (
        pytest.raises(Exception) as aborted,
        client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="broken", input=FAILS_AFTER_ONE_SENTENCE, response_format="mp3"
        ) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += len(chunk)
    assert type(aborted.value).__name__ == "RemoteProtocolError", repr(aborted.value)
    assert "incomplete chunked read" in str(aborted.value)
    assert received > 8000  # the first sentence arrived before the failure

    with pytest.raises(openai.APIConnectionError):
        client.audio.speech.create(
            model="tts-1", voice="broken", input=FAILS_AFTER_ONE_SENTENCE, response_format="pcm"
        )
    assert stream_errors(tts_server) == errors_before + 2
    assert len(client.audio.speech.create(model="tts-1", voice="alloy", input="Fine.").content)


async def test_runtime_turns_the_aborted_stream_into_an_error_event(
    runtime_host: RuntimeHost,
    scripted_llm: ScriptedLLMServer,
    tts_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scripted_llm.script, "answer", FAILS_AFTER_ONE_SENTENCE)
    app = runtime_host.start(llm_url=scripted_llm.url, tts_url=tts_server, tts_voice="broken")
    peer = Peer(app.url)
    try:
        await peer.connect()
        asked = await turn(peer)
        (error,) = errors_after(peer, asked)
        assert error["code"] == "tts_unavailable"
        assert "incomplete chunked read" in str(error["message"])
        assert await peer.agent.wait_voiced_after(asked, 10) > asked  # the first sentence
    finally:
        await peer.close()
        runtime_host.stop(app)


def test_the_documented_sdk_example_writes_an_mp3(tts_server: str, tmp_path: Path) -> None:
    doc = (REPO / "docs" / "tts.md").read_text()
    example = re.search(r"```python\n(from openai import OpenAI\n.*?)```", doc, re.S)
    assert example is not None
    code = example.group(1).replace("http://127.0.0.1:8000", tts_server)
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=60)
    _, samples, rate = decode((tmp_path / "hello.mp3").read_bytes(), "mp3")
    assert len(samples) / rate > 1.5  # two sentences


# -- names and the voice map, without a server -----------------------------------------------


def test_every_name_the_sdk_knows_is_understood() -> None:
    fields = typing.get_type_hints(speech_create_params.SpeechCreateParams)
    voices, models = literals(fields["voice"]), literals(fields["model"])
    assert "alloy" in voices and voices <= set(OPENAI_VOICES)
    assert "tts-1" in models and models <= set(OPENAI_MODELS)
    assert literals(fields["response_format"]) == set(CONTENT_TYPES)


def literals(annotation: object) -> set[object]:
    """The literal values anywhere in a type (`Union[str, Literal["alloy", ...], VoiceID]`)."""
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    return {value for arg in typing.get_args(annotation) for value in literals(arg)}


def test_default_map_sends_every_openai_voice_to_the_default_voice() -> None:
    catalog = Catalog.from_settings(TTSSettings(default_voice="amy", piper_voices={"amy": "a"}))
    for name in OPENAI_VOICES:
        assert catalog.key("piper", name) == "piper:amy"
    assert catalog.key("piper", "en_US-joe-medium") == "piper:en_US-joe-medium"


def test_the_map_is_configurable_and_replaces_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_TTS_PIPER_VOICES", '{"amy": "/voices/amy.onnx"}')
    monkeypatch.setenv("PARLEY_TTS_OPENAI_VOICES", '{"alloy": "amy", "onyx": "default"}')
    catalog = Catalog.from_settings(TTSSettings())
    assert catalog.key("piper", "alloy") == "piper:amy"
    assert catalog.key("piper", "onyx") == "piper:en_US-joe-medium"
    with pytest.raises(CatalogError, match=r"unknown voice 'nova'.*mapped: \['alloy', 'onyx'\]"):
        catalog.key("piper", "nova")
    assert catalog.voice("xtts", "alloy", ["amy", "bob"]) == "amy"
    with pytest.raises(CatalogError, match="maps to 'amy', which xtts does not have"):
        catalog.voice("xtts", "alloy", ["bob"])


def test_a_map_to_a_voice_piper_lacks_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match=r"\{'alloy': 'amy'\}"):
        TTSSettings(openai_voices={"alloy": "amy"})


def test_every_setting_is_documented() -> None:
    doc = (REPO / "docs" / "tts.md").read_text()
    for name, field in TTSSettings.model_fields.items():
        variable = field.validation_alias or f"PARLEY_TTS_{name.upper()}"
        assert f"`{variable}`" in doc, variable
