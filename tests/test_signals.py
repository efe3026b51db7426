"""The runtime's signals with real models and real WebRTC peers: Prometheus metrics and SCOS
move with a real conversation, backpressure climbs its five levels in order with each effect
observable and falls back with hysteresis, a stalled turn is reset, and drain (HTTP and
SIGTERM) lets live conversations finish."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from parley.scos import BackpressureLevel, Scos
from parley_bench.peer import Peer
from parley_runtime.config import BRIEF_INSTRUCTION
from tests.support.runtime_host import RunningApp, RuntimeHost, free_port
from tests.support.scripted_llm import ScriptedLLMServer
from tests.support.talk import LONG_QUESTIONS, turn

pytestmark = pytest.mark.e2e


async def scos(url: str) -> Scos:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{url}/v1/scos")
    response.raise_for_status()
    return Scos.model_validate(response.json())


async def metric(url: str, sample: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{url}/metrics")).text
    found = re.search(rf"^{re.escape(sample)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def wait_level(url: str, level: BackpressureLevel, timeout: float = 15) -> Scos:
    """Wait until the level is at least `level` (real load may add its own triggers)."""
    deadline = time.monotonic() + timeout
    while True:
        summary = await scos(url)
        if summary.backpressure.level >= level:
            return summary
        if time.monotonic() > deadline:
            raise AssertionError(f"level {summary.backpressure.name}, expected {level.name}")
        await asyncio.sleep(0.2)


TURN_METRICS = [
    "parley_ttfa_seconds_count",
    "parley_asr_final_seconds_count",
    "parley_llm_first_token_seconds_count",
    "parley_llm_first_sentence_seconds_count",
    "parley_tts_first_chunk_seconds_count",
    "parley_end_of_turn_delay_seconds_count",
    'parley_turns_total{outcome="completed"}',
    "parley_sessions_admitted_total",
    "parley_outbound_frames_total",
]


async def test_metrics_and_scos_move_with_a_real_conversation(runtime: RunningApp) -> None:
    before = {name: await metric(runtime.url, name) for name in TURN_METRICS}
    peer = Peer(runtime.url)
    await peer.connect()
    try:
        during = await scos(runtime.url)
        assert during.sessions.active == 1 and during.ready and not during.draining
        asked = await turn(peer)
        await asyncio.sleep(1.2)  # one signal evaluation: frame counters
        after = {name: await metric(runtime.url, name) for name in TURN_METRICS}
        moved = [name for name in TURN_METRICS if after[name] <= before[name]]
        assert moved == [], f"did not move: {moved}"
        summary = await scos(runtime.url)
        assert summary.latency.warm_up.ttfa.samples >= 1
        assert summary.turns.completed >= 1
        assert summary.media.frames_sent > 0
        # visuals at level NORMAL: mouth shapes arrived while the agent spoke
        assert any(e["type"] == "visemes" for at, e in peer.events if at > asked)
        # a client's own V2V report lands in SCOS (and nonsense does not)
        before_v2v = summary.latency.warm_up.v2v.samples
        before_v2v_count = await metric(runtime.url, "parley_v2v_seconds_count")
        assert peer.send_client_metrics(v2v_ms=912.0)
        assert peer.send_client_metrics(v2v_ms=-3.0)
        deadline = time.monotonic() + 5
        while (await scos(runtime.url)).latency.warm_up.v2v.samples == before_v2v:
            assert time.monotonic() < deadline, "the client's V2V report never reached SCOS"
            await asyncio.sleep(0.1)
        assert (await scos(runtime.url)).latency.warm_up.v2v.samples == before_v2v + 1
        # … and in Prometheus, once (the nonsense dropped there too)
        v2v_count = await metric(runtime.url, "parley_v2v_seconds_count")
        assert v2v_count == before_v2v_count + 1
    finally:
        await peer.close()
    assert (await scos(runtime.url)).sessions.active == 0


async def test_every_metric_has_help_and_the_documented_labels(runtime: RunningApp) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{runtime.url}/metrics")).text
    families = set(re.findall(r"^# TYPE (parley_\w+) ", text, re.MULTILINE))
    helped = set(re.findall(r"^# HELP (parley_\w+) \S", text, re.MULTILINE))
    assert families and families <= helped
    for outcome in (
        "completed",
        "interrupted",
        "speculation_discarded",
        "reset_no_audio",
        "failed",
    ):
        assert f'parley_turns_total{{outcome="{outcome}"}}' in text
    for reason in ("capacity", "backpressure", "draining"):
        assert f'parley_sessions_rejected_total{{reason="{reason}"}}' in text
    for gauge in ("parley_backpressure_level", "parley_draining", "parley_event_loop_lag_seconds"):
        assert re.search(rf"^{gauge} ", text, re.MULTILINE), gauge


@pytest.fixture
def ladder(runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer) -> Iterator[RunningApp]:
    """Capacity 5 whose levels come one per session, and a short hold."""
    app = runtime_host.start(
        llm_url=scripted_llm.url,
        max_sessions=5,
        backpressure_load_steps=[0.2, 0.4, 0.6, 0.8],
        admission_limited_fraction=0.8,
        backpressure_hold_s=2.0,
        retry_after_s=3,
    )
    yield app
    runtime_host.stop(app)


async def test_backpressure_climbs_in_order_with_each_effect_then_recovers(
    ladder: RunningApp, scripted_llm: ScriptedLLMServer
) -> None:
    peers: list[Peer] = []
    levels: list[tuple[float, BackpressureLevel]] = []

    async def record_levels() -> None:
        while True:
            level = (await scos(ladder.url)).backpressure.level
            if not levels or levels[-1][1] != level:
                levels.append((time.monotonic(), level))
            await asyncio.sleep(0.1)

    recorder = asyncio.create_task(record_levels())

    async def join() -> Peer:
        peer = Peer(ladder.url)
        await peer.connect()
        peers.append(peer)
        return peer

    try:
        first = await join()
        await wait_level(ladder.url, BackpressureLevel.VISUALS_OFF)
        asked = await turn(first)
        await first.agent.wait_quiet(0.3, 20)
        assert first.agent.voiced_since(asked), "the audio is never degraded"
        assert not any(e["type"] == "visemes" for at, e in first.events if at > asked)

        await join()
        summary = await wait_level(ladder.url, BackpressureLevel.BRIEF)
        assert "sessions 2/5 >= 40% of capacity" in summary.backpressure.reasons
        normal_max_tokens = ladder.app.state.settings.llm_max_tokens
        read_ahead, asking = len(scripted_llm.script.prefills), time.monotonic()
        asked = await turn(first, LONG_QUESTIONS[0])
        body = scripted_llm.script.bodies[-1]
        said = [e for at, e in first.events if at > asking and e["type"] == "transcript"]
        partials = [e for e in said if not e["final"]]
        assert partials and len(scripted_llm.script.prefills) == read_ahead, "no read-ahead"
        assert isinstance(body["max_tokens"], int) and body["max_tokens"] < normal_max_tokens
        system, *_, question = body["messages"]  # type: ignore[misc]
        assert system["content"] == ladder.app.state.settings.system_prompt
        assert question["content"].endswith(BRIEF_INSTRUCTION)
        assert first.agent.voiced_since(asked)
        # The next request starts as this one did, so the LLM server reads only what is new.
        await first.agent.wait_quiet(0.3, 20)
        await turn(first)
        asked_then = body["messages"]
        assert scripted_llm.script.bodies[-1]["messages"][: len(asked_then)] == asked_then  # type: ignore[index]

        await join()
        await wait_level(ladder.url, BackpressureLevel.ADMISSION_LIMITED)
        await join()
        summary = await wait_level(ladder.url, BackpressureLevel.SESSION_REJECT)
        assert summary.sessions.admission_cap == 0

        async with httpx.AsyncClient(base_url=ladder.url, timeout=30) as http:
            await peers.pop().close()  # a slot is free, but the level holds
            refused = await http.post("/v1/sessions", json={"sdp": "v=0", "type": "offer"})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
            assert "under load" in refused.json()["detail"]
            assert (await http.get("/readyz")).status_code == 200, "shedding is not unready"
        assert (await scos(ladder.url)).sessions.rejected_total >= 1

        for peer in peers:
            await peer.close()
        peers.clear()
        await wait_recovered(ladder.url)
    finally:
        recorder.cancel()
        for peer in peers:
            await peer.close()
    seen = [level for _, level in levels]
    top = seen.index(BackpressureLevel.SESSION_REJECT)
    rise, fall = seen[: top + 1], seen[top:]
    assert rise == sorted(rise) and rise[0] == 0, f"rose {rise}"
    assert fall == [4, 3, 2, 1, 0], f"fell {fall}: one level at a time"
    times = [at for at, _ in levels[top:]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1.5, f"stepped down {gaps} s apart with a 2 s hold"


async def wait_recovered(url: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while (await scos(url)).backpressure.level is not BackpressureLevel.NORMAL:
        assert time.monotonic() < deadline, "backpressure never fell back to NORMAL"
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.3)  # the recorder sees it too


@pytest.fixture
def deadline_app(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> Iterator[RunningApp]:
    app = runtime_host.start(llm_url=scripted_llm.url, turn_deadline_ms=1500)
    yield app
    runtime_host.stop(app)


async def test_a_turn_whose_llm_stalls_is_reset_after_the_deadline(
    deadline_app: RunningApp, scripted_llm: ScriptedLLMServer
) -> None:
    resets = 'parley_turns_total{outcome="reset_no_audio"}'
    before = await metric(deadline_app.url, resets)
    peer = Peer(deadline_app.url)
    await peer.connect()
    try:
        scripted_llm.script.modes = ["stall"]
        asked = await turn(peer, timeout=20)
        _, error = await peer.wait_for(lambda e: e["type"] == "error", 5, after=asked)
        assert error["code"] == "turn_reset"
        thinking = next(
            at for at, e in peer.events if at > asked - 1 and e.get("state") == "thinking"
        )
        listening = await peer.wait_state("listening", 1, after=thinking)
        assert listening - thinking < 10, "reset long before the LLM timeout"
        assert not peer.agent.voiced_since(asked), "nothing partial was spoken"
        assert await metric(deadline_app.url, resets) == before + 1

        asked = await turn(peer)
        await peer.agent.wait_voiced_after(asked, 10)
    finally:
        await peer.close()


async def test_http_drain_waits_for_live_sessions_and_can_be_undone(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    app = runtime_host.start(llm_url=scripted_llm.url)
    peer = Peer(app.url)
    try:
        await peer.connect()
        drain = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "parley", "runtime", "drain", "--url", app.url, "--wait"],
            stdout=asyncio.subprocess.PIPE,
        )
        summary = await scos(app.url)
        while not summary.draining:
            await asyncio.sleep(0.1)
            summary = await scos(app.url)
        assert summary.sessions.admission_cap == 0 and not summary.ready
        asked = await turn(peer)  # the live conversation goes on
        await peer.agent.wait_voiced_after(asked, 10)
        assert drain.returncode is None, "still waiting for the live session"
        await peer.close()
        out, _ = await asyncio.wait_for(drain.communicate(), 15)
        assert drain.returncode == 0 and "no live sessions left" in out.decode()
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as http:
            assert (await http.delete("/v1/drain")).json()["draining"] is False
            assert (await http.get("/readyz")).status_code == 200
        second = Peer(app.url)
        await second.connect()
        await second.close()
    finally:
        await peer.close()
        runtime_host.stop(app)


class RuntimeProcess:
    """`parley runtime serve` as its own process, for signals."""

    def __init__(self, llm_url: str, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "parley", "runtime", "serve", "--port", str(self.port)]
        env = {**os.environ, "PARLEY_ICE_HOST_ADDRESSES": '["127.0.0.1"]'}
        self.process = subprocess.Popen(
            [*command, "--llm-url", llm_url, *flags],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[1]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("the runtime did not become ready")

    def exited(self, timeout: float) -> tuple[int, str]:
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@contextlib.asynccontextmanager
async def runtime_with_a_caller(
    llm_url: str, *flags: str
) -> AsyncIterator[tuple[RuntimeProcess, Peer]]:
    """A runtime process, ready, with one connected caller; both gone afterwards."""
    runtime = RuntimeProcess(llm_url, *flags)
    peer = Peer(runtime.url)
    try:
        await asyncio.to_thread(runtime.wait_ready)
        await peer.connect()
        await peer.wait_state("listening", 10)
        yield runtime, peer
    finally:
        await peer.close()
        runtime.kill()


async def test_sigterm_drains_live_sessions_then_exits_zero(
    scripted_llm: ScriptedLLMServer,
) -> None:
    async with runtime_with_a_caller(scripted_llm.url, "--drain-timeout-s", "120") as (
        runtime,
        peer,
    ):
        runtime.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=runtime.url, timeout=10) as http:
            for _ in range(50):
                if (await http.get("/readyz")).status_code == 503:
                    break
                await asyncio.sleep(0.1)
            refused = await http.post("/v1/sessions", json={"sdp": "v=0", "type": "offer"})
            assert refused.status_code == 503 and "draining" in refused.json()["detail"]
            undo = await http.delete("/v1/drain")
            assert undo.status_code == 409
        asked = await turn(peer)  # the live conversation keeps talking
        await peer.agent.wait_voiced_after(asked, 10)
        assert runtime.process.poll() is None
        await peer.close()
        code, log = await asyncio.to_thread(runtime.exited, 30)
        assert code == 0, log
        assert "every session ended" in log and "cut" not in log.split("SIGTERM", 1)[1]


async def test_sigterm_cuts_what_outlives_the_grace_period(
    scripted_llm: ScriptedLLMServer,
) -> None:
    async with runtime_with_a_caller(scripted_llm.url, "--drain-timeout-s", "2") as (
        runtime,
        peer,
    ):
        started = time.monotonic()
        runtime.process.send_signal(signal.SIGTERM)
        code, log = await asyncio.to_thread(runtime.exited, 30)
        assert code == 0 and "cut 1 session" in log, log
        assert time.monotonic() - started >= 1.5
        await peer.wait_state("ended", 5)


async def test_a_second_sigterm_exits_at_once(scripted_llm: ScriptedLLMServer) -> None:
    async with runtime_with_a_caller(scripted_llm.url, "--drain-timeout-s", "120") as (
        runtime,
        _,
    ):
        runtime.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        runtime.process.send_signal(signal.SIGTERM)
        code, log = await asyncio.to_thread(runtime.exited, 20)
        assert code == 1 and "second SIGTERM" in log
