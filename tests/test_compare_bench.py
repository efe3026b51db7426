"""`parley bench compare`: the parts that decide what is measured, and short real runs.

Pure: espeak-ng speech (format, speakers and rates that differ, cached, a hesitation of exactly
the slow speaker's length), where an utterance's
last voiced sample is and that the microphone times exactly that, where the agent's speech
ended after an interruption, the scripted conversation, the duty cycle, the summary, ratios
and table. Real: the peer over SmallWebRTC signalling (audio only, no data channel) against
an aiortc echo server, and the bench on the command line against the suite's Parley runtime:
the docs' short form, two concurrent sessions, and the slow speakers, whom nobody may cut off.

The Pipecat side does not run here: its virtual environment is a pip install of several
minutes and its bot loads its own models; docs/testing.md says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from fastapi import FastAPI

from parley.cli import main
from parley.pcm import OUTPUT_FRAME_SAMPLES, OUTPUT_RATE
from parley_bench import latency, soak
from parley_bench.compare.by_ear import speech_end
from parley_bench.compare.cpu import CpuSample, cpu_use
from parley_bench.compare.report import cpu_line, format_table, ratios, stack_summary
from parley_bench.compare.script import (
    INTERRUPTIONS,
    LONG_REQUESTS,
    QUESTIONS,
    SLOW_QUESTIONS,
    BargeIn,
    Question,
    conversation,
)
from parley_bench.compare.session import idle_after
from parley_bench.compare.stacks import stack_server
from parley_bench.compare.voices import SLOW_SPEAKERS, SPEAKERS, Speaker, spoken
from parley_bench.peer import SMALL_WEBRTC_SIGNALLING, Peer, ScriptedMicrophone, voiced_span
from parley_bench.proc import group_cpu_seconds
from tests.support.runtime_host import RunningApp
from tests.support.threaded_server import ThreadedServer

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (`make system-deps` installs it as root)",
)

# -- the user's voices ------------------------------------------------------------------------


@needs_espeak
def test_espeak_speech_is_48_khz_int16_speech_and_cached() -> None:
    pcm = spoken("What do fish live in?", SPEAKERS[0])
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert 0.8 < len(pcm) / OUTPUT_RATE < 3.0  # five words at 170 wpm, at 48 kHz
    first, last = voiced_span(pcm)
    assert last - first > OUTPUT_RATE // 2
    assert spoken("What do fish live in?", SPEAKERS[0]) is pcm


@needs_espeak
def test_speakers_differ_and_a_faster_rate_is_shorter() -> None:
    text = "Which animal has a long trunk?"
    samples = [spoken(text, speaker) for speaker in SPEAKERS]
    fingerprints = {(len(s), int(np.abs(s.astype(np.int32)).sum())) for s in samples}
    assert len(fingerprints) == len(SPEAKERS)
    slow, fast = spoken(text, Speaker("en-us", 140)), spoken(text, Speaker("en-us", 190))
    assert len(fast) < 0.85 * len(slow)


@needs_espeak
def test_a_hesitation_is_exactly_the_speakers_silence_between_the_two_parts() -> None:
    speaker = Speaker("en-us+m2", 115, word_gap=2, hesitation_ms=500)
    whole = spoken("How many wheels | does a bicycle have?", speaker)
    voiced = np.abs(whole.astype(np.int32)) > 200
    first, second = (spoken(part, speaker) for part in ("How many wheels", "does a bicycle have?"))
    quiet_runs = np.diff(np.flatnonzero(voiced))
    longest_ms = quiet_runs.max() * 1000 / OUTPUT_RATE
    assert 500 <= longest_ms < 520  # the hesitation, not espeak-ng's own pauses around the parts
    assert len(whole) < len(first) + len(second) + OUTPUT_RATE // 2
    assert spoken("What is the time?", speaker).size > 0  # a line without `|`: one part


# -- where an utterance ends -----------------------------------------------------------------


def tone(ms: int, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(OUTPUT_RATE * ms // 1000) / OUTPUT_RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def quiet(ms: int) -> np.ndarray:
    return np.zeros(OUTPUT_RATE * ms // 1000, dtype=np.int16)


def test_the_voiced_span_leaves_out_leading_and_trailing_silence() -> None:
    pcm = np.concatenate([quiet(100), tone(300), quiet(1000)])
    first, last = voiced_span(pcm)
    assert first <= OUTPUT_RATE // 10 + 50
    assert OUTPUT_RATE * 400 // 1000 - 50 <= last < OUTPUT_RATE * 400 // 1000
    assert voiced_span(quiet(500)) == (0, 0)


async def test_the_microphone_times_the_last_voiced_sample_not_the_silence_after_it() -> None:
    mic = ScriptedMicrophone()
    said = mic.say(np.concatenate([quiet(100), tone(300), quiet(1000)]))
    frames = 0
    while not said.finished.done():
        await mic.recv()
        frames += 1
    # The last voiced sample (at 400 ms) is in the 20th 20 ms frame; 1.4 s would be 70.
    assert frames == 400 * OUTPUT_RATE // 1000 // OUTPUT_FRAME_SAMPLES
    assert said.started.result() < said.finished.result()
    mic.stop()


# -- where the agent's speech ended ----------------------------------------------------------


def frames(*spans: tuple[float, float]) -> list[tuple[float, bool]]:
    """20 ms frames from 0 to 10 s, voiced inside the given (start, end) spans."""
    times = [i * 0.02 for i in range(500)]
    return [(t, any(a <= t <= b for a, b in spans)) for t in times]


def test_speech_end_follows_the_speech_across_short_pauses() -> None:
    agent = frames((1.0, 3.0), (3.4, 4.1), (6.0, 8.0))  # a 0.4 s pause, then 1.9 s quiet
    assert speech_end(agent, since=2.0, quiet_s=1.0) == pytest.approx(4.1, abs=0.02)


def test_speech_end_before_the_interruption_means_nothing_was_interrupted() -> None:
    agent = frames((1.0, 1.5), (4.0, 5.0))
    end = speech_end(agent, since=2.0, quiet_s=1.0)
    assert end is not None and end <= 2.0
    assert speech_end(frames((4.0, 5.0)), since=2.0, quiet_s=1.0) is None


# -- the conversation ------------------------------------------------------------------------


def test_the_conversation_has_its_counts_and_is_fixed_by_the_seed() -> None:
    script = conversation(16, 6, seed=0)
    assert len(script) == 16
    assert sum(isinstance(t, BargeIn) for t in script) == 6
    assert isinstance(script[0], Question)
    assert conversation(16, 6, seed=0) == script
    assert conversation(16, 6, seed=1) != script
    assert {t.speaker for t in script} == set(SPEAKERS)
    assert [t.speaker for t in script[:3]] == list(SPEAKERS[:3])
    assert conversation(2, 2, seed=0)[0] == BargeIn(LONG_REQUESTS[0], INTERRUPTIONS[0], SPEAKERS[0])
    with pytest.raises(ValueError, match="barge-ins"):
        conversation(2, 3, seed=0)


def test_the_slow_conversation_rotates_the_slow_speakers_over_their_own_questions() -> None:
    script = conversation(6, 0, seed=0, speakers="slow")
    assert [t.speaker for t in script] == list(SLOW_SPEAKERS)
    assert all(isinstance(t, Question) and t.text in SLOW_QUESTIONS for t in script)
    assert not {t.speaker for t in script} & set(SPEAKERS)
    assert all(s.hesitation_ms and s.wpm <= 125 for s in SLOW_SPEAKERS)


def test_the_lines_are_the_benchs_own() -> None:
    others = {*latency.QUESTIONS, *soak.QUESTIONS, *soak.LONG_QUESTIONS, *soak.INTERRUPTIONS}
    others |= {latency.LONG_QUESTION, latency.INTERRUPTION, "How many legs does a spider have?"}
    slow = {line.replace(" | ", " ") for line in SLOW_QUESTIONS}
    assert not others & {*QUESTIONS, *LONG_REQUESTS, *INTERRUPTIONS, *slow}


def test_the_duty_cycle_pauses_in_proportion_to_the_talk() -> None:
    rng = random.Random(0)
    assert idle_after(10.0, 1.0, rng) == 0.0
    pauses = [idle_after(3.0, 0.3, rng) for _ in range(200)]
    assert all(7.0 * 0.8 <= p <= 7.0 * 1.2 for p in pauses)  # 3 s x 0.7 / 0.3 = 7 s


# -- the report ------------------------------------------------------------------------------


def turn(kind: str, outcome: str, v2v: float | None = None, barge: float | None = None) -> dict:
    metrics = {"asr_ms": 300.0, "ttfa_ms": 150.0, "speculative": True} if v2v else None
    return {
        "kind": kind,
        "outcome": outcome,
        "v2v_ms": v2v,
        "barge_in_ms": barge,
        "talked_over": False,
        "metrics": metrics,
        "server_errors": [],
    }


def records(v2v: list[float], bargings: list[float]) -> list[dict[str, Any]]:
    return [turn("question", "answered", v2v=v) for v in v2v] + [
        turn("barge_in", "interrupted", barge=b) for b in bargings
    ]


def test_the_summary_counts_every_outcome_and_takes_percentiles() -> None:
    rows = records([600, 700, 800, 900], [100, 140])
    rows += [turn("question", "no_answer"), turn("barge_in", "nothing_to_interrupt")]
    rows[-2]["server_errors"] = ["turn_reset"]
    summary = stack_summary(rows)
    assert summary["server_errors"] == {"turn_reset": 1}
    assert summary["turns"] == 8
    assert summary["outcomes"]["no_answer"] == 1
    assert summary["outcomes"]["nothing_to_interrupt"] == 1
    assert summary["v2v_ms"] == {"n": 4, "p50_ms": 750.0, "p95_ms": 885.0, "worst_ms": 900}
    assert summary["barge_in_ms"]["n"] == 2 and summary["barge_in_ms"]["worst_ms"] == 140
    assert summary["stages_ms"]["asr_ms"]["p50_ms"] == 300.0
    assert summary["stages_ms"]["llm_first_token_ms"]["n"] == 0
    assert summary["speculative_share"] == 1.0


def test_ratios_are_parley_over_pipecat_and_none_without_samples() -> None:
    parley = stack_summary(records([500, 700], [100]))
    pipecat = stack_summary(records([1000, 1400], []))
    compared = ratios(parley, pipecat)
    assert compared["v2v_p50"] == 0.5 and compared["v2v_p95"] == 0.5
    assert compared["barge_in_p50"] is None


def test_the_table_shows_both_stacks_the_ratio_a_failed_stack_and_parleys_stages() -> None:
    parley = stack_summary(records([500, 700], [100]))
    pipecat = stack_summary(records([1000, 1400], [200]))
    table = format_table({"parley": parley, "pipecat": pipecat}, ratios(parley, pipecat))
    assert "Parley/Pipecat: V2V p50 0.50" in table and "barge-in p50 0.50" in table
    assert "asr_ms" in table and "speculative share" in table
    assert "reported errors" not in table
    parley["server_errors"] = {"turn_reset": 2}
    failed = format_table({"parley": parley, "pipecat": {"error": "pip failed"}}, None)
    assert "parley reported errors: turn_reset x2" in failed
    assert "pipecat  did not run: pip failed" in failed and "Parley/Pipecat" not in failed


def test_cpu_use_is_cores_per_party_and_the_machines_busy_share() -> None:
    before = CpuSample(10.0, {"stack": 5.0, "client": 1.0}, 100.0, 400.0, 2)
    after = CpuSample(20.0, {"stack": 17.0, "client": 4.0}, 118.0, 420.0, 2)
    use = cpu_use(before, after)
    assert use == {
        "stack": 1.2,
        "client": 0.3,
        "machine_busy_share": 0.9,
        "machine_cores": 2,
    }
    assert cpu_line(use) == "used cores: stack 1.20, client 0.30 of 2; machine 90% busy"


def test_a_process_groups_cpu_time_counts_every_process_in_it(tmp_path: Path) -> None:
    """A server started in its own session that starts a child: both burn CPU, and both count,
    also once the child has exited."""
    script = tmp_path / "burn.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "def burn(seconds):\n"
        "    end = time.process_time() + seconds\n"
        "    while time.process_time() < end:\n"
        "        pass\n"
        "if sys.argv[1:] == ['child']:\n"
        "    burn(0.6)\n"
        "else:\n"
        "    subprocess.run([sys.executable, __file__, 'child'], check=True)\n"
        "    burn(0.6)\n"
        "    print('done', flush=True)\n"
        "    time.sleep(30)\n"
    )
    group = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert group.stdout is not None and group.stdout.readline() == b"done\n"
        # Both burns, once each: the exited child's time through its parent; nothing of
        # other groups (the suite's own process alone has used more than the margin).
        assert 1.2 <= group_cpu_seconds(group.pid) < 1.2 + 0.5
    finally:
        group.kill()
        group.wait()


def test_an_unknown_stack_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stack"):
        stack_server("livekit", "http://127.0.0.1:1/v1", 0, 0, print)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(args)
    return status, stdout.getvalue(), stderr.getvalue()


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--stacks", "parley,livekit"], "--stacks"),
        (["--turns", "2", "--barge-ins", "3"], "--barge-ins"),
        (["--duty-cycle", "0"], "--duty-cycle"),
        (["--sessions", "0"], "--sessions"),
        (["--speakers", "fast"], "--speakers"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(flags: list[str], said: str) -> None:
    status, _, stderr = run_cli(["bench", "compare", *flags])
    assert status == 2 and said in stderr


# -- the peer over SmallWebRTC signalling ----------------------------------------------------


def echo_server() -> FastAPI:
    """An audio-only WebRTC server with SmallWebRTC's signalling that sends back what it
    hears: what the peer needs of Pipecat's bot, without Pipecat."""
    relay = MediaRelay()
    connections: list[RTCPeerConnection] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.gather(*(pc.close() for pc in connections))

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/offer")
    async def offer(body: dict[str, str]) -> dict[str, str]:
        pc = RTCPeerConnection()
        connections.append(pc)

        @pc.on("track")
        def echo(track: MediaStreamTrack) -> None:
            pc.addTrack(relay.subscribe(track))

        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        return {"sdp": pc.localDescription.sdp, "type": "answer", "pc_id": "echo-1"}

    return app


@pytest.fixture
def echo() -> Iterator[ThreadedServer]:
    with ThreadedServer(echo_server()) as server:
        yield server


@pytest.fixture
async def small_webrtc_peer(echo: ThreadedServer) -> AsyncIterator[Peer]:
    peer = Peer(echo.root, signalling=SMALL_WEBRTC_SIGNALLING)
    await peer.connect(timeout=20)
    yield peer
    await peer.close()


async def test_the_peer_talks_to_an_audio_only_small_webrtc_server(small_webrtc_peer: Peer) -> None:
    peer = small_webrtc_peer
    assert peer.channel is None and peer.session_id is None
    assert peer.pc.connectionState == "connected"
    started = await peer.mic.say(tone(400)).started
    heard = await peer.agent.wait_voiced_after(started, 10)
    assert heard > started
    assert peer.events == []


# -- real runs against the suite's runtime ---------------------------------------------------


def compare_cli(runtime: RunningApp, out: Path, *flags: str) -> tuple[int, str, dict[str, Any]]:
    status, stdout, _ = run_cli(
        ["bench", "compare", *flags, "--parley-url", runtime.url, "--json", str(out)]
    )
    return status, stdout, json.loads(out.read_text())


@needs_espeak
@pytest.mark.e2e
def test_a_short_compare_run_measures_parley_by_ear(runtime: RunningApp, tmp_path: Path) -> None:
    status, stdout, report = compare_cli(
        runtime, tmp_path / "compare.json", "--stacks", "parley", "--turns", "2", "--barge-ins", "1"
    )
    assert status == 0, stdout[-3000:]
    parley = report["stacks"]["parley"]
    assert parley["session_failures"] == []
    question, interrupted = sorted(parley["turns"], key=lambda t: t["kind"] != "question")
    assert question["kind"] == "question" and interrupted["kind"] == "barge_in"
    assert question["outcome"] == "answered" and question["v2v_ms"] > 0
    assert question["server_errors"] == []
    (answer,) = question["agent_text"]
    assert answer.strip(), "Parley's answer, from its response events"
    assert question["metrics"]["asr_ms"] > 0 and question["metrics"]["ttfa_ms"] >= 0
    assert interrupted["outcome"] in ("interrupted", "nothing_to_interrupt")
    if interrupted["outcome"] == "interrupted":
        assert interrupted["barge_in_ms"] > 0
    summary = parley["summary"]
    assert summary["v2v_ms"]["n"] == 1 and summary["stages_ms"]["asr_ms"]["n"] == 1
    assert report["parley_over_pipecat"] is None  # one stack: nothing to divide by
    used = summary["cpu_cores"]
    assert used["client"] > 0 and 0 < used["machine_busy_share"] <= 1
    assert "stack" not in used and "llm_server" not in used  # given by URL: not started here
    assert "parley used cores: client " in stdout
    assert "parley s1 turn 1/2" in stdout and "parley s1 turn 2/2" in stdout
    assert report["table"] in stdout and "Parley's stages" in stdout


@needs_espeak
@pytest.mark.e2e
def test_concurrent_sessions_each_play_their_own_conversation(
    runtime: RunningApp, tmp_path: Path
) -> None:
    flags = ["--stacks", "parley", "--turns", "1", "--barge-ins", "0", "--sessions", "2"]
    status, stdout, report = compare_cli(
        runtime, tmp_path / "compare.json", *flags, "--duty-cycle", "0.5", "--seed", "3"
    )
    assert status == 0, stdout[-3000:]
    turns = report["stacks"]["parley"]["turns"]
    assert len(turns) == 2 and all(t["kind"] == "question" for t in turns)
    assert [t["session"] for t in turns] == [0, 1]
    assert turns[0]["speaker"] != turns[1]["speaker"]  # seeds 3 and 4: the rotation differs
    assert "parley s1 turn 1/1" in stdout and "parley s2 turn 1/1" in stdout


@needs_espeak
@pytest.mark.e2e
def test_nobody_is_cut_off_on_the_slow_speakers(runtime: RunningApp, tmp_path: Path) -> None:
    """Each slow speaker hesitates 350-600 ms mid-question, where the words so far may sound
    finished ("What is the opposite"): the early endpoint must not answer the fragment."""
    flags = ["--stacks", "parley", "--speakers", "slow", "--turns", "6", "--barge-ins", "0"]
    status, stdout, report = compare_cli(runtime, tmp_path / "compare.json", *flags)
    assert status == 0, stdout[-3000:]
    turns = report["stacks"]["parley"]["turns"]
    assert len(turns) == 6 and {t["speaker"] for t in turns} == {str(s) for s in SLOW_SPEAKERS}
    assert [t for t in turns if t["talked_over"]] == []
    assert all(t["outcome"] == "answered" for t in turns), stdout[-3000:]
