"""Authentication and abuse limits: each attack the hardening issue names is tried against a
real server and refused, and a normal session still works afterwards. Then a property run
(schemathesis) of both servers' HTTP APIs from their OpenAPI schemas: no 5xx, no hang.

A *remote* client is simulated over loopback: the guarded runtime trusts 127.0.0.1 as a proxy
(`trusted_proxies`), so each request's `X-Forwarded-For` names the client it stands for. A plain
loopback request is a *local* client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import itertools
import json
import math
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from starlette.datastructures import Headers

from parley.cli import main
from parley.demo import demo_settings
from parley.pcm import INPUT_RATE
from parley.security.bodies import refusal
from parley.security.browser import origin_allowed
from parley.security.clients import client_of, parse_networks, rate_key
from parley.security.ratelimit import RateLimiter
from parley.security.tokens import TokenSet, bearer_token
from parley_bench.peer import Peer
from parley_runtime import RuntimeSettings, create_app
from parley_runtime.agent import Conversation
from parley_runtime.audio import AgentAudioOutput
from parley_runtime.events import EventChannel
from parley_runtime.server import allowed_hosts
from parley_runtime.turns import AdaptiveSilence, Endpointer, TurnSignal
from parley_tts.config import TTSSettings
from parley_tts.server import create_tts_app
from tests.support.cluster import CACHE
from tests.support.runtime_host import RunningApp, RuntimeHost
from tests.support.scripted_llm import ScriptedLLMServer
from tests.support.threaded_server import ThreadedServer
from tests.test_concurrency import LoudnessVAD, frames16, services
from tests.test_http_api import offer_sdp

# Hypothesis keeps its caches here, not in the repository.
set_hypothesis_home_dir(CACHE / "hypothesis")

ADMIN = "admin-0123456789abcdef"
API = "api-0123456789abcdef"
LIMIT = 5  # the default rate: 5 sessions a minute per client


def remote(n: int, **headers: str) -> dict[str, str]:
    """Headers of a request from remote client number `n` (through the trusted proxy)."""
    return {"X-Forwarded-For": f"198.51.100.{n}", **headers}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer) -> Iterator[RunningApp]:
    """A runtime as a cluster runs it: an admin token, behind a proxy (here: loopback)."""
    app = runtime_host.start(
        llm_url=scripted_llm.url,
        admin_tokens=[SecretStr(ADMIN)],
        trusted_proxies=["127.0.0.1/32"],
        max_sessions=4,
    )
    yield app
    runtime_host.stop(app)


@pytest.fixture
async def http(guarded: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
        yield client


async def create(http: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await http.post(
        "/v1/sessions", json={"sdp": await offer_sdp(), "type": "offer"}, headers=headers
    )


async def still_serves(app: RunningApp) -> None:
    """A normal session: it connects, the agent listens; then it is ended with its secret."""
    peer = Peer(app.url)
    try:
        await peer.connect()
        await peer.wait_state("listening", 15)
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            own = await http.get(f"/v1/sessions/{peer.session_id}", headers=bearer(ADMIN))
            assert own.status_code == 200 and own.json()["state"] == "listening"
            await http.delete(f"/v1/sessions/{peer.session_id}", headers=bearer(ADMIN))
    finally:
        await peer.close()


async def end_all(http: httpx.AsyncClient) -> None:
    listed = (await http.get("/v1/sessions", headers=bearer(ADMIN))).json()["sessions"]
    for session in listed:
        await http.delete(f"/v1/sessions/{session['id']}", headers=bearer(ADMIN))


def run_soak_cli(args: list[str]) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        status = main(args)
    return status, stdout.getvalue().strip()


def challenged(response: httpx.Response) -> bool:
    return response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")


# -- admin requests --------------------------------------------------------------------------


async def test_drain_needs_the_admin_token(guarded: RunningApp, http: httpx.AsyncClient) -> None:
    for method in ("POST", "DELETE"):
        assert challenged(await http.request(method, "/v1/drain", headers=remote(1)))
        assert challenged(await http.request(method, "/v1/drain"))  # loopback: no exception
        wrong = await http.request(method, "/v1/drain", headers=bearer("guess"))
        assert challenged(wrong) and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    ready = await http.get("/readyz")
    assert ready.status_code == 200, "a refused drain must leave the pod in service"
    await still_serves(guarded)

    drained = await http.post("/v1/drain", headers=bearer(ADMIN))
    assert drained.status_code == 200 and drained.json()["draining"] is True
    undrained = await http.delete("/v1/drain", headers=bearer(ADMIN))
    assert undrained.status_code == 200 and undrained.json()["draining"] is False


async def test_without_an_admin_token_only_local_clients_are_admin(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    app = runtime_host.start(llm_url=scripted_llm.url, trusted_proxies=["127.0.0.1/32"])
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            refused = await http.post("/v1/drain", headers=remote(2))
            assert refused.status_code == 403 and "local clients" in refused.json()["detail"]
            assert (await http.get("/v1/sessions", headers=remote(2))).status_code == 403
            # A request a proxy on this host forwards is not a local one, even unconfigured.
            proxied = await http.get("/v1/sessions", headers={"X-Forwarded-For": "127.0.0.1"})
            assert proxied.status_code == 403
            assert (await http.get("/v1/sessions")).status_code == 200  # the local client
            await still_serves(app)
    finally:
        runtime_host.stop(app)


async def test_others_sessions_can_be_neither_listed_read_nor_ended(
    guarded: RunningApp, http: httpx.AsyncClient
) -> None:
    mine, theirs = await create(http, **remote(3)), await create(http, **remote(4))
    assert mine.status_code == theirs.status_code == 201
    secret, victim = mine.json()["secret"], theirs.json()["id"]
    assert mine.headers["parley-session-secret"] == secret and len(secret) >= 32
    try:
        assert challenged(await http.get("/v1/sessions", headers=remote(3)))
        assert challenged(await http.get("/v1/sessions", headers=remote(3, **bearer(secret))))
        for method in ("GET", "DELETE"):
            response = await http.request(
                method, f"/v1/sessions/{victim}", headers=remote(3, **bearer(secret))
            )
            assert challenged(response)
            assert challenged(await http.request(method, f"/v1/sessions/{victim}"))
        listed = (await http.get("/v1/sessions", headers=bearer(ADMIN))).json()["sessions"]
        assert victim in [s["id"] for s in listed], "the victim's session must be untouched"

        # Its own secret reads and ends a session; then it is gone.
        own = f"/v1/sessions/{mine.json()['id']}"
        assert (await http.get(own, headers=remote(3, **bearer(secret)))).status_code == 200
        assert (await http.delete(own, headers=remote(3, **bearer(secret)))).status_code == 204
        assert (await http.get(own, headers=bearer(ADMIN))).status_code == 404
        # The admin token ends any session.
        ended = await http.delete(f"/v1/sessions/{victim}", headers=bearer(ADMIN))
        assert ended.status_code == 204
    finally:
        await end_all(http)
    await still_serves(guarded)


async def test_a_whip_client_gets_its_secret_in_a_header(
    guarded: RunningApp, http: httpx.AsyncClient
) -> None:
    created = await http.post(
        "/v1/sessions",
        content=await offer_sdp(),
        headers=remote(5, **{"Content-Type": "application/sdp"}),
    )
    assert created.status_code == 201 and created.text.startswith("v=0")
    secret = created.headers["parley-session-secret"]
    ended = await http.delete(created.headers["location"], headers=bearer(secret))
    assert ended.status_code == 204


async def test_the_signals_stay_open(http: httpx.AsyncClient) -> None:
    """SCOS, metrics and the probes: the operator, Prometheus and kubelet read them without a
    token (a NetworkPolicy guards them in a cluster)."""
    for path in ("/v1/scos", "/metrics", "/healthz", "/readyz"):
        assert (await http.get(path, headers=remote(6))).status_code == 200, path


async def test_api_tokens_guard_session_creation(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer, tmp_path: Path
) -> None:
    tokens = tmp_path / "api-tokens"
    tokens.write_text(f"# one a line\n{API}\n\n")
    app = runtime_host.start(
        llm_url=scripted_llm.url,
        api_tokens_file=str(tokens),
        admin_tokens=[SecretStr(ADMIN)],
    )
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            assert challenged(await create(http))
            assert challenged(await create(http, **bearer("nope")))
            for token in (API, ADMIN):
                created = await create(http, **bearer(token))
                assert created.status_code == 201, created.text
                secret = created.json()["secret"]
                ended = await http.delete(created.headers["location"], headers=bearer(secret))
                assert ended.status_code == 204
            # A rotated file is read again: the old token stops working, the new one works.
            tokens.write_text("api-rotated-token\n")
            assert challenged(await create(http, **bearer(API)))
            created = await create(http, **bearer("api-rotated-token"))
            assert created.status_code == 201
            await http.delete(created.headers["location"], headers=bearer(ADMIN))
    finally:
        runtime_host.stop(app)


@pytest.mark.e2e
async def test_a_soak_creates_its_sessions_with_the_token_it_is_given(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer, tmp_path: Path
) -> None:
    """A soak Job is given the runtime's token (`--token-file`): without it, a runtime that
    wants API tokens refuses every session it tries."""
    tokens = tmp_path / "api-tokens"
    tokens.write_text(f"{API}\n")
    app = runtime_host.start(llm_url=scripted_llm.url, api_tokens_file=str(tokens))
    try:
        args = ["soak", "--target", app.url, "--sessions", "1", "--duration", "6s"]
        status, stdout = await asyncio.to_thread(run_soak_cli, [*args, "--token-file", str(tokens)])
        assert status == 0, stdout
        connections = json.loads(stdout)["connections"]
        assert connections["opened"] >= 1 and connections["failed"] == 0
        status, stdout = await asyncio.to_thread(run_soak_cli, args)
        assert status == 2  # no session could connect: the harness failed
        summary = json.loads(stdout)
        assert summary["connections"]["opened"] == 0
        assert summary["errors"].get("connect_http_401", 0) >= 1
    finally:
        runtime_host.stop(app)


# -- what a web page can do ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None],
)
async def test_bodies_of_other_types_are_415(
    guarded: RunningApp, http: httpx.AsyncClient, content_type: str | None
) -> None:
    """`text/plain` is what a page may POST anywhere without asking (no CORS preflight)."""
    body = b'{"sdp": "v=0", "type": "offer"}'
    headers = {} if content_type is None else {"Content-Type": content_type}
    request = http.build_request("POST", "/v1/sessions", content=body, headers=headers)
    if content_type is None:
        request.headers.pop("content-type", None)
    response = await http.send(request)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    drain = await http.post("/v1/drain", content=b"x", headers={"Content-Type": "text/plain"})
    assert drain.status_code == 415
    assert (await http.get("/v1/sessions", headers=bearer(ADMIN))).json()["sessions"] == []


async def test_a_state_change_from_another_origin_is_403(
    guarded: RunningApp, http: httpx.AsyncClient
) -> None:
    """A page may send a body-less POST anywhere (a "simple" request): drain is refused for
    its origin before the token is even looked at; the page's own origin passes."""
    evil = {"Origin": "https://evil.example", **bearer(ADMIN)}
    assert (await http.post("/v1/drain", headers=evil)).status_code == 403
    assert (await http.delete("/v1/drain", headers=evil)).status_code == 403
    assert (await http.get("/readyz")).status_code == 200
    own = {"Origin": guarded.url, **bearer(ADMIN)}
    assert (await http.post("/v1/drain", headers=own)).status_code == 200
    assert (await http.delete("/v1/drain", headers=own)).status_code == 200
    await still_serves(guarded)


async def test_cors_preflight_from_an_unlisted_origin_gets_no_allow_header(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer, http: httpx.AsyncClient
) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    for path in ("/v1/sessions", "/v1/drain"):
        response = await http.options(path, headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in response.headers
    listed = "https://app.example"
    app = runtime_host.start(llm_url=scripted_llm.url, cors_origins=[listed])
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
            allowed = await client.options(
                "/v1/sessions",
                headers={
                    "Origin": listed,
                    **preflight,
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert allowed.headers["access-control-allow-origin"] == listed
            other = await client.options(
                "/v1/sessions", headers={"Origin": "https://evil.example", **preflight}
            )
            assert "access-control-allow-origin" not in other.headers
            created = await client.post(
                "/v1/sessions",
                json={"sdp": await offer_sdp()},
                headers={"Origin": listed},
            )
            assert created.status_code == 201
            exposed = created.headers["access-control-expose-headers"].lower()
            assert "parley-session-secret" in exposed
            await client.delete(created.headers["location"])
    finally:
        runtime_host.stop(app)


async def test_a_foreign_host_name_is_400_on_a_local_server(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer, http: httpx.AsyncClient
) -> None:
    """DNS rebinding: a page's own name re-pointed at 127.0.0.1 arrives as its Host."""
    rebound = await http.post("/v1/drain", headers={"Host": "evil.example:8080"})
    assert rebound.status_code == 400
    assert (await http.get("/", headers={"Host": "evil.example"})).status_code == 400
    for name in ("localhost", "127.0.0.1", "[::1]"):
        assert (await http.get("/healthz", headers={"Host": f"{name}:80"})).status_code == 200
    # The demo's settings say the same, whatever address it listens on.
    demo = RuntimeSettings(**demo_settings("0.0.0.0", 8080, "http://127.0.0.1:8081/v1", 4))
    assert allowed_hosts(demo) == ["127.0.0.1", "localhost", "[::1]"]
    # A server listening on every interface (a pod) answers any name: a Service, a pod IP.
    assert allowed_hosts(RuntimeSettings(host="0.0.0.0")) == []
    app = runtime_host.start(llm_url=scripted_llm.url, allowed_hosts=["voice.example"])
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
            assert (await client.get("/healthz")).status_code == 400
            named = await client.get("/healthz", headers={"Host": "voice.example"})
            assert named.status_code == 200
    finally:
        runtime_host.stop(app)


# -- the rate of session creation, and offers that never connect ------------------------------


async def test_a_sixth_session_in_a_minute_is_429_with_retry_after(
    guarded: RunningApp, http: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    for _ in range(LIMIT):
        created = await create(http, **remote(7))
        assert created.status_code == 201, created.text
        ended = await http.delete(
            created.headers["location"], headers=remote(7, **bearer(created.json()["secret"]))
        )
        assert ended.status_code == 204
    refused = await create(http, **remote(7))
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 60 - math.ceil(time.monotonic() - started) <= retry_after <= 60
    # Another client, an admin token and a local client are not held back by it.
    for headers in (remote(8), remote(7, **bearer(ADMIN)), {}):
        created = await create(http, **headers)
        assert created.status_code == 201, headers
        await http.delete(created.headers["location"], headers=bearer(ADMIN))
    # One IPv6 host is one client for all the addresses of its /64.
    for n in range(LIMIT):
        created = await create(http, **{"X-Forwarded-For": f"2001:db8:1:2::{n + 1}"})
        assert created.status_code == 201
        await http.delete(created.headers["location"], headers=bearer(ADMIN))
    v6 = await create(http, **{"X-Forwarded-For": "2001:db8:1:2:ffff::1"})
    assert v6.status_code == 429
    await still_serves(guarded)


async def test_offers_that_never_connect_free_their_slot_within_seconds(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    timeout_s = RuntimeSettings().connect_timeout_s
    assert timeout_s <= 5, "an unconnected offer must not hold a slot for long"
    app = runtime_host.start(llm_url=scripted_llm.url, max_sessions=2)
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            for n in range(2):
                assert (await create(http)).status_code == 201, n  # the offers' peers are gone
            answered = time.monotonic()
            assert (await create(http)).status_code == 503  # the pod is full of them
            while (await http.get("/v1/sessions")).json()["sessions"]:
                assert time.monotonic() - answered < timeout_s + 3, "still held"
                await asyncio.sleep(0.2)
            metrics = (await http.get("/metrics")).text
            assert 'parley_sessions_reaped_total{reason="never connected"} 2.0' in metrics
        await still_serves(app)
    finally:
        runtime_host.stop(app)


# -- the TTS server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tts() -> Iterator[ThreadedServer]:
    settings = TTSSettings(max_input_chars=120, max_body_bytes=4096, max_queue=8)
    with ThreadedServer(create_tts_app(settings)) as server:
        yield server


def raw_request(port: int, head: str, timeout: float = 5) -> bytes:
    """Send `head` (request line and headers) and no body; what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


async def test_tts_refuses_an_oversized_body_before_reading_it(tts: ThreadedServer) -> None:
    # A declared length over the limit: answered at once, though not one body byte was sent.
    answer = raw_request(
        tts.port,
        "POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    async with httpx.AsyncClient(base_url=tts.url, timeout=60) as http:
        # Not JSON at all, yet 413, not 422: the size is judged before any parsing.
        response = await http.post(
            "/audio/speech", content=b"{" * 5000, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert "4096-byte limit" in response.json()["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            for _ in range(10):
                yield b" " * 1024

        streamed = await http.post(
            "/audio/speech", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        plain = await http.post(
            "/audio/speech", content=b'{"input": "hi"}', headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        spoken = await http.post(
            "/audio/speech", json={"input": "Still here.", "response_format": "pcm"}
        )
        assert spoken.status_code == 200 and len(spoken.content) > 4800


async def test_tts_input_loses_its_control_characters(tts: ThreadedServer) -> None:
    """The property run's find: a NUL made Piper fail mid-stream (an aborted response). And
    a lone surrogate (JSON can escape one) made the validation error unwritable: a 500."""
    async with httpx.AsyncClient(base_url=tts.url, timeout=60) as http:
        only = await http.post("/audio/speech", json={"input": "\x00\x1b\x07"})
        assert only.status_code == 422 and "input is empty" in only.json()["detail"]
        mixed = await http.post(
            "/audio/speech", json={"input": "Hello\x00 there.", "response_format": "pcm"}
        )
        assert mixed.status_code == 200 and len(mixed.content) > 4800
        surrogate = await http.post(
            "/audio/speech",
            content=b'{"input": "Hello \\ud800."}',
            headers={"Content-Type": "application/json"},
        )
        assert surrogate.status_code == 422, surrogate.text


async def test_runtime_offers_must_be_valid_unicode(http: httpx.AsyncClient) -> None:
    for field in ("sdp", "system_prompt", "voice"):
        body = {"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", field: "x\ud800"}
        encoded = json.dumps(body).encode()  # the surrogate goes as the escape \ud800
        response = await http.post(
            "/v1/sessions", content=encoded, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (field, response.text)
        assert "Unicode" in response.json()["detail"]


# -- the docs pages -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"])
async def test_the_api_docs_pages_are_off_unless_asked_for(path: str) -> None:
    apps = {
        "runtime": (create_app(RuntimeSettings()), create_app(RuntimeSettings(api_docs=True))),
        "tts": (create_tts_app(TTSSettings()), create_tts_app(TTSSettings(api_docs=True))),
    }
    for name, (off, on) in apps.items():
        for app, status in ((off, 404), (on, 200)):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                assert (await c.get(path)).status_code == status, (name, path)
        assert off.openapi()["paths"], "the schema is still there for tests and tools"


# -- the utterance cap --------------------------------------------------------------------------


def test_an_utterance_that_never_pauses_is_capped_every_max_utterance_ms() -> None:
    endpointer = Endpointer(AdaptiveSilence(), max_utterance_ms=30_000)
    signals = []
    for window in range(100_000 // 32):  # 100 s of speech without a pause
        for signal in endpointer.update(0.9):
            signals.append((window * 32, signal))
        assert endpointer.utterance_ms < 30_000
    caps = [ms for ms, signal in signals if signal is TurnSignal.CAP]
    gaps = [b - a for a, b in itertools.pairwise([0, *caps])]
    assert len(caps) == 3 and all(29_900 <= gap <= 30_100 for gap in gaps), caps
    starts = [ms for ms, signal in signals if signal is TurnSignal.SPEECH_START]
    assert len(starts) == 4, "the speech after each cap is a new utterance"


def test_pauses_too_short_to_end_a_turn_do_not_escape_the_cap() -> None:
    endpointer = Endpointer(AdaptiveSilence(), max_utterance_ms=10_000)
    talk = ([0.9] * 30 + [0.05] * 10) * 20  # 960 ms of speech, 320 ms of pause, 20 times
    signals = [s for p in talk for s in endpointer.update(p)]
    assert TurnSignal.END_OF_TURN not in signals and TurnSignal.CAP in signals


async def test_a_long_voiced_signal_keeps_memory_bounded_and_commits_turns() -> None:
    """125 s of loud voiced sound with no pause (a television): each 30 s the turn is
    committed, what continues interrupts the answer, and the audio held never grows past one
    utterance (and the reply of the last one)."""

    class RecordingASR:
        def __init__(self) -> None:
            self.heard_s: list[float] = []

        async def transcribe(self, pcm: np.ndarray, partial: bool = False) -> str:
            self.heard_s.append(len(pcm) / INPUT_RATE)
            await asyncio.Event().wait()  # never answers: continued speech interrupts it
            return ""

    asr = RecordingASR()
    async with services(LoudnessVAD(), asr) as shared:
        conversation = Conversation(shared, RuntimeSettings(), AgentAudioOutput(), EventChannel())
        conversation.start()
        frames = list(frames16(5_000, loud=True))  # 5 s, fed again and again (as copies)
        tracemalloc.start()
        try:
            held = {}
            for fed_s in range(5, 130, 5):
                for pcm in frames:
                    conversation.feed(pcm.copy())
                    await asyncio.sleep(0)  # as frames arrive: replies start and unwind
                gc.collect()  # cancelled tasks leave cycles behind, which hold their audio
                held[fed_s] = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        await conversation.close()

    assert conversation.turns == 4
    turns = [s for s in asr.heard_s if s > 5]  # the others: a partial transcript
    assert len(turns) == 4 and all(30 <= s <= 30.5 for s in turns), asr.heard_s
    # 5 s after each cap (once the first cycle is over), as much is held: unbounded, each
    # 30 s more would add 960 kB.
    after_caps = [held[65], held[95], held[125]]
    assert max(after_caps) - min(after_caps) < 300_000, held


# -- the pure pieces ----------------------------------------------------------------------------


def test_the_rate_limiter_slides_and_stays_small() -> None:
    limiter = RateLimiter(5, window_s=60, max_keys=3)
    assert [limiter.hit("a", t) for t in (0, 1, 2, 3, 4)] == [None] * 5
    assert limiter.hit("a", 10) == pytest.approx(50)  # the first hit leaves the window at 60
    assert limiter.hit("a", 60.5) is None  # it has
    for key in "bcdef":
        limiter.hit(key, 61)
    assert len(limiter) == 3, "a flood of new addresses makes it forget, not grow"


def test_clients_and_their_rate_keys() -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_of("203.0.113.9", {"x-forwarded-for": "1.2.3.4"}, trusted).address == (
        "203.0.113.9"
    ), "an untrusted peer's X-Forwarded-For is not believed"
    chain = {"x-forwarded-for": "6.6.6.6, 198.51.100.1, 10.0.0.2"}
    assert client_of("10.0.0.1", chain, trusted).address == "198.51.100.1"
    assert client_of("127.0.0.1", {}, ()).local
    assert not client_of("127.0.0.1", {"forwarded": "for=1.2.3.4"}, ()).local
    assert not client_of("192.0.2.1", {}, ()).local
    assert rate_key("2001:db8::1") == rate_key("2001:db8::ffff") == "2001:db8::/64"
    assert rate_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_tokens_bodies_and_origins() -> None:
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None
    tokens = TokenSet(["one", "two"])
    assert tokens.matches("two") and not tokens.matches("tw") and not tokens.matches(None)
    assert not TokenSet().configured and TokenSet(["x"]).configured
    json_only = ("application/json",)
    assert refusal(Headers({"content-length": "0"}), 10, json_only) is None
    assert refusal(Headers({"content-length": "3", "content-type": "text/plain"}), 10, json_only)
    assert refusal(
        Headers({"content-length": "11", "content-type": "application/json"}), 10, json_only
    ) == (
        413,
        "body of 11 bytes is over the 10-byte limit",
    )
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", ())
    assert not origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080", ())
    assert not origin_allowed("null", "127.0.0.1:8080", ())
    assert origin_allowed("https://app.example", "voice:8080", ("https://app.example",))


# -- property run of both HTTP APIs --------------------------------------------------------------


POSITIVE = schemathesis.GenerationMode.POSITIVE


def acceptable(response: Any) -> bool:
    """No server error: a 503 is the designed answer of a pod that sheds load or drains, and
    then it says when to come back."""
    status = response.status_code
    return status < 500 or (status == 503 and "retry-after" in response.headers)


def fuzz(schema: dict[str, Any], base_url: str, headers: dict[str, str], examples: int) -> int:
    """Every operation of `schema`, `examples` generated requests each (valid ones, and
    invalid ones where it takes input), against the server at `base_url`; each must answer
    within 20 s and not with a 5xx. Returns how many requests were made."""
    loaded = schemathesis.openapi.from_dict(schema)
    calls = 0
    for result in loaded.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=base_url, headers=headers, timeout=20)
                assert acceptable(response), (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )

            try:
                run()
            except Unsatisfiable:
                if mode is POSITIVE:
                    raise  # else: no invalid input exists (no parameters, or any string goes)
    return calls


def test_the_runtime_api_survives_a_property_run(guarded: RunningApp) -> None:
    schema = guarded.app.openapi()
    assert "requestBody" in schema["paths"]["/v1/sessions"]["post"]
    calls = fuzz(schema, guarded.url, bearer(ADMIN), examples=50)
    assert calls > 50
    with httpx.Client(base_url=guarded.url, timeout=10) as http:
        http.delete("/v1/drain", headers=bearer(ADMIN))
        for session in http.get("/v1/sessions", headers=bearer(ADMIN)).json()["sessions"]:
            http.delete(f"/v1/sessions/{session['id']}", headers=bearer(ADMIN))
    asyncio.run(still_serves(guarded))


def test_the_tts_api_survives_a_property_run(tts: ThreadedServer) -> None:
    calls = fuzz(tts.app.openapi(), tts.root, {}, examples=50)
    assert calls > 30
    with httpx.Client(base_url=tts.url, timeout=30) as http:
        spoken = http.post("/audio/speech", json={"input": "Still here.", "response_format": "pcm"})
        assert spoken.status_code == 200 and spoken.content
