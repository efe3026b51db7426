"""The runtime's HTTP contract, including every bad input the design names. The client here is
local (loopback) and the runtime has no tokens: it may do everything, as `parley demo`'s page
may; what others may not do is `tests/test_abuse.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from parley_bench.peer import Peer
from parley_runtime.webrtc import peer_connection
from tests.support.runtime_host import RunningApp, RuntimeHost
from tests.support.scripted_llm import ScriptedLLMServer


@pytest.fixture(scope="module")
def app(runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer) -> Iterator[RunningApp]:
    running = runtime_host.start(llm_url=scripted_llm.url, max_sessions=2, retry_after_s=7)
    yield running
    runtime_host.stop(running)


@pytest.fixture
async def http(app: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        yield client


async def offer_sdp() -> str:
    pc = peer_connection([])
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_health_ready_and_metrics(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = (await http.get("/metrics")).text
    assert "parley_sessions_capacity 2.0" in metrics
    assert "parley_ttfa_seconds_bucket" in metrics


async def test_json_offer_answer_and_lifecycle(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/sessions", json={"sdp": await offer_sdp(), "type": "offer"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["type"] == "answer" and body["sdp"].startswith("v=0")
    assert response.headers["location"] == f"/v1/sessions/{body['id']}"
    # The session's secret: a field added to the answer, and a header.
    assert set(body) == {"id", "sdp", "type", "secret"}
    assert response.headers["parley-session-secret"] == body["secret"]
    listed = (await http.get("/v1/sessions")).json()
    assert body["id"] in [s["id"] for s in listed["sessions"]]
    one = (await http.get(f"/v1/sessions/{body['id']}")).json()
    assert one["state"] == "listening"
    assert (await http.delete(f"/v1/sessions/{body['id']}")).status_code == 204
    assert (await http.get(f"/v1/sessions/{body['id']}")).status_code == 404


async def test_whip_style_sdp_body(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/sessions", content=await offer_sdp(), headers={"content-type": "application/sdp"}
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/sdp")
    assert response.text.startswith("v=0") and "a=setup:" in response.text
    secret = {"Authorization": f"Bearer {response.headers['parley-session-secret']}"}
    assert (await http.delete(response.headers["location"], headers=secret)).status_code == 204


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"sdp": "this is not sdp", "type": "offer"}, "no audio"),
        (
            {"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nnonsense", "type": "offer"},
            "malformed",
        ),
        ({"type": "offer"}, "expected"),
        ({"sdp": "v=0", "type": "answer"}, "expected type 'offer'"),
        ({"sdp": "v=0", "type": "offer", "voice": 3}, "'voice' must be a string"),
    ],
)
async def test_bad_offers_are_422_with_a_reason(
    http: httpx.AsyncClient, body: dict[str, object], fragment: str
) -> None:
    response = await http.post("/v1/sessions", json=body)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]
    assert (await http.get("/v1/sessions")).json()["sessions"] == []


async def test_not_json_is_422(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/sessions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "not JSON" in response.json()["detail"]


async def test_unknown_voice_names_the_known_ones(http: httpx.AsyncClient) -> None:
    body = {"sdp": await offer_sdp(), "type": "offer", "voice": "nope"}
    response = await http.post("/v1/sessions", json=body)
    assert response.status_code == 422 and "en_US-joe-medium" in response.json()["detail"]


async def test_oversized_bodies_are_413(http: httpx.AsyncClient) -> None:
    huge = {"sdp": "v=0\r\n" + "a=x\r\n" * 20_000, "type": "offer"}
    assert (await http.post("/v1/sessions", json=huge)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: enforced while reading
        for _ in range(100):
            yield b"x" * 1024

    response = await http.post(
        "/v1/sessions", content=chunks(), headers={"content-type": "application/sdp"}
    )
    assert response.status_code == 413


async def test_unknown_sessions_are_404(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/sessions/nope")).status_code == 404
    response = await http.delete("/v1/sessions/nope")
    assert response.status_code == 404 and "nope" in response.json()["detail"]


async def test_session_cap_answers_503_with_retry_after(app: RunningApp) -> None:
    peers = [Peer(app.url), Peer(app.url)]
    try:
        for peer in peers:
            await peer.connect()
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            refused = await http.post(
                "/v1/sessions", json={"sdp": await offer_sdp(), "type": "offer"}
            )
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "7"
            assert "capacity" in refused.json()["detail"]
            ready = await http.get("/readyz")
            assert ready.status_code == 200, "a full pod stays ready: it refuses by itself"
            metrics = (await http.get("/metrics")).text
            assert 'parley_sessions_rejected_total{reason="capacity"} 1.0' in metrics
    finally:
        for peer in peers:
            await peer.close()


async def test_drain_stops_admission(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    app = runtime_host.start(llm_url=scripted_llm.url)
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            drained = await http.post("/v1/drain")
            assert drained.json() == {"draining": True, "active_sessions": 0}
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["reasons"] == ["draining"]
            refused = await http.post(
                "/v1/sessions", json={"sdp": await offer_sdp(), "type": "offer"}
            )
            assert refused.status_code == 503 and "draining" in refused.json()["detail"]
    finally:
        runtime_host.stop(app)
