"""The agent's outbound track: pacing without drift, and pause / resume / clear."""

import numpy as np
import pytest

from parley.pcm import OUTPUT_FRAME_SAMPLES, OUTPUT_RATE
from parley_runtime.audio import AgentAudioOutput, PlaybackSegment


class FakeClock:
    """Monotonic time that only moves when the track sleeps; every sleep oversleeps by
    `lateness`, as a busy event loop would."""

    def __init__(self, lateness: float) -> None:
        self.now = 1000.0
        self.lateness = lateness

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.lateness


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(lateness=0.003)


@pytest.fixture
def track(clock: FakeClock) -> AgentAudioOutput:
    return AgentAudioOutput(clock=clock.monotonic, sleep=clock.sleep)


def tone(frames: int, value: int = 1000) -> np.ndarray:
    return np.full(frames * OUTPUT_FRAME_SAMPLES, value, dtype=np.int16)


async def test_ten_minutes_of_frames_do_not_drift(
    track: AgentAudioOutput, clock: FakeClock
) -> None:
    start = clock.now
    frames = 10 * 60 * 50
    for _ in range(frames):
        frame = await track.recv()
    assert frame.pts == (frames - 1) * OUTPUT_FRAME_SAMPLES
    assert frame.sample_rate == OUTPUT_RATE and frame.samples == OUTPUT_FRAME_SAMPLES
    # Each sleep ran 3 ms late, yet the schedule is absolute: still on time after 10 minutes
    # (a relative sleep(0.02) per frame would be 90 s late).
    expected = start + (frames - 1) / 50
    assert expected <= clock.now <= expected + 0.0031


async def test_silence_when_idle_then_queued_audio(track: AgentAudioOutput) -> None:
    assert not (await track.recv()).to_ndarray().any()
    track.push(tone(2))
    assert (await track.recv()).to_ndarray().max() == 1000
    assert (await track.recv()).to_ndarray().max() == 1000
    assert not (await track.recv()).to_ndarray().any()


async def test_clear_stops_audio_at_the_next_frame(track: AgentAudioOutput) -> None:
    segment = PlaybackSegment("hello there")
    track.push(tone(50), segment)
    for _ in range(10):
        await track.recv()
    track.clear()
    assert not (await track.recv()).to_ndarray().any()
    assert (segment.frames, segment.played) == (50, 10)
    assert not track.pending


async def test_pause_holds_audio_and_resume_continues_where_it_stopped(
    track: AgentAudioOutput,
) -> None:
    track.push(np.concatenate([tone(1, 100), tone(1, 200), tone(1, 300)]))
    assert (await track.recv()).to_ndarray().max() == 100
    track.pause()
    assert not (await track.recv()).to_ndarray().any()
    assert not (await track.recv()).to_ndarray().any()
    track.resume()
    assert (await track.recv()).to_ndarray().max() == 200
    assert (await track.recv()).to_ndarray().max() == 300


async def test_marks_fire_when_playback_reaches_them(track: AgentAudioOutput) -> None:
    seen: list[str] = []
    track.mark(lambda: seen.append("start"))
    track.push(tone(2))
    track.mark(lambda: seen.append("end"))
    await track.recv()
    assert seen == ["start"]
    await track.recv()
    assert seen == ["start"]
    await track.recv()
    assert seen == ["start", "end"]


async def test_partial_frames_are_padded_on_flush(track: AgentAudioOutput) -> None:
    track.push(np.full(OUTPUT_FRAME_SAMPLES + 10, 7, dtype=np.int16))
    track.flush()
    await track.recv()
    last = (await track.recv()).to_ndarray().reshape(-1)
    assert list(last[:10]) == [7] * 10 and not last[10:].any()
