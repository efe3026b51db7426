"""Audio-driven mouth shapes: the pure analysis, the hold-then-ease, and the animator that
turns played frames into `visemes` events (fed synthetic frames on a fake clock)."""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import numpy as np
import pytest

from parley.pcm import OUTPUT_FRAME_SAMPLES, OUTPUT_RATE
from parley_runtime.audio import AgentAudioOutput, SentFrame
from parley_runtime.visuals import (
    ARKIT_BLENDSHAPES,
    HoldThenEase,
    VisemeAnimator,
    mouth_shapes,
    neutral_pose,
    smooth,
)

FRAME_S = OUTPUT_FRAME_SAMPLES / OUTPUT_RATE
WINDOW = OUTPUT_RATE // 30  # what the animator analyses per event at 30 Hz


def tone(hz: float, samples: int, amplitude: float = 12_000, start: int = 0) -> np.ndarray:
    t = (np.arange(samples) + start) / OUTPUT_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def syllables(samples: int, start: int = 0) -> np.ndarray:
    """Speech-like: a 180 Hz voice with a few harmonics, with a pause after each syllable."""
    t = (np.arange(samples) + start) / OUTPUT_RATE
    voice = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)  # three syllables a second
    return (6_000 * envelope * voice).astype(np.int16)


# -- pure shapes ----------------------------------------------------------------------------


def test_a_loud_tone_opens_the_jaw_and_silence_is_neutral() -> None:
    loud = mouth_shapes(tone(220, WINDOW))
    assert loud["jawOpen"] > 0.7
    assert mouth_shapes(np.zeros(WINDOW, dtype=np.int16)) == neutral_pose()
    hiss = np.random.default_rng(1).normal(0, 20, WINDOW).astype(np.int16)  # about -64 dBFS
    assert mouth_shapes(hiss) == neutral_pose()


def test_louder_audio_opens_the_jaw_wider() -> None:
    jaw = [mouth_shapes(tone(220, WINDOW, amplitude))["jawOpen"] for amplitude in (300, 3000, 9000)]
    assert 0 < jaw[0] < jaw[1] < jaw[2] <= 1


def test_low_sounds_round_the_lips_and_high_sounds_do_not() -> None:
    low = mouth_shapes(tone(300, WINDOW))
    high = mouth_shapes(tone(3000, WINDOW))
    assert low["jawOpen"] == pytest.approx(high["jawOpen"], abs=0.05)  # same loudness
    assert low["mouthFunnel"] > 0.6 and high["mouthFunnel"] < 0.05
    quiet_low = mouth_shapes(tone(300, WINDOW, amplitude=400))
    quiet_high = mouth_shapes(tone(3000, WINDOW, amplitude=400))
    assert quiet_low["mouthPucker"] > quiet_high["mouthPucker"] + 0.3


def test_quiet_speech_presses_the_lips_and_the_face_stays_neutral_otherwise() -> None:
    quiet = mouth_shapes(tone(220, WINDOW, amplitude=200))
    assert 0 < quiet["mouthClose"] <= quiet["jawOpen"]
    assert mouth_shapes(tone(220, WINDOW))["mouthClose"] == 0
    for signal in (tone(150, WINDOW), tone(5000, WINDOW, 800), syllables(WINDOW, 3000)):
        pose = mouth_shapes(signal)
        assert set(pose) <= set(ARKIT_BLENDSHAPES)
        assert all(0.0 <= value <= 1.0 for value in pose.values())
        assert pose["mouthSmileLeft"] == pose["mouthSmileRight"] == 0  # no emotion


def test_smoothing_opens_quickly_and_closes_more_slowly() -> None:
    closed, open_ = {"jawOpen": 0.0}, {"jawOpen": 1.0}
    opening = smooth(closed, open_, dt_s=1 / 30)["jawOpen"]
    closing = 1.0 - smooth(open_, closed, dt_s=1 / 30)["jawOpen"]
    assert 0.5 < opening < 1.0
    assert 0.2 < closing < opening


# -- hold, then ease ------------------------------------------------------------------------


def test_hold_then_ease_is_smooth_monotone_and_ends_exactly_neutral() -> None:
    pose = {"jawOpen": 0.8, "mouthFunnel": 0.3, "mouthClose": 0.0}
    easer = HoldThenEase(hold_ms=100, ease_ms=150)
    easer.show(pose, now=10.0)
    times = [10.0 + ms / 1000 for ms in range(0, 401)]
    poses = [easer.pose_at(now) for now in times]
    for now, shown in zip(times, poses, strict=True):
        if now <= 10.1:
            assert shown == pose
    for name in pose:
        values = [shown[name] for shown in poses]
        steps = np.diff(values)
        assert (steps <= 0).all(), name
        # smoothstep's slope peaks at 1.5: at most 1.5 * 1/150 of the value per millisecond
        assert -steps.min() <= pose[name] * 1.5 / 150 + 1e-9, name
    assert not easer.settled(10.249)
    assert easer.settled(10.25)
    assert easer.pose_at(10.25) == {"jawOpen": 0.0, "mouthFunnel": 0.0, "mouthClose": 0.0}


def test_a_new_live_pose_restarts_the_hold() -> None:
    easer = HoldThenEase()
    easer.show({"jawOpen": 0.5}, now=0.0)
    easer.keep(0.2)
    assert easer.pose_at(0.3) == {"jawOpen": 0.5}
    assert easer.pose_at(0.45) == {"jawOpen": 0.0}


def test_the_ease_duration_is_configurable_within_100_to_300_ms() -> None:
    easer = HoldThenEase(hold_ms=100, ease_ms=300)
    easer.show({"jawOpen": 0.5}, now=0.0)
    assert 0 < easer.pose_at(0.25)["jawOpen"] < 0.5
    assert easer.pose_at(0.4)["jawOpen"] == 0.0
    for bad in (50, 400):
        with pytest.raises(ValueError, match="ease_ms"):
            HoldThenEase(ease_ms=bad)


# -- the animator ---------------------------------------------------------------------------


class Played:
    """Feeds an animator frames as the output track would: on a clock, 20 ms apart."""

    def __init__(self, enabled: bool = True, **options: Any) -> None:
        self.now = 500.0
        self.enabled = enabled
        self.events: list[dict[str, Any]] = []
        self.sample = 0
        self.animator = VisemeAnimator(
            self.events.append, lambda: self.enabled, clock=lambda: self.now, **options
        )

    def speech(self, seconds: float) -> None:
        for _ in range(round(seconds / FRAME_S)):
            self.frame(syllables(OUTPUT_FRAME_SAMPLES, self.sample), voiced=True)

    def loud_tone(self, seconds: float) -> None:
        for _ in range(round(seconds / FRAME_S)):
            self.frame(tone(220, OUTPUT_FRAME_SAMPLES, start=self.sample), voiced=True)

    def silence(self, seconds: float) -> None:
        for _ in range(round(seconds / FRAME_S)):
            self.frame(np.zeros(OUTPUT_FRAME_SAMPLES, dtype=np.int16), voiced=False)

    def frame(self, pcm: np.ndarray, voiced: bool, late_by: float = 0.0) -> None:
        self.now += FRAME_S
        self.sample += pcm.size
        at = self.now + late_by
        sent = SentFrame(pcm, voiced, late_by > FRAME_S, at)
        clock_now = self.now
        self.now = at
        self.animator.on_frame(sent)
        self.now = clock_now


def jaw(events: list[dict[str, Any]]) -> list[float]:
    return [event["shapes"]["jawOpen"] for event in events]


def test_speech_makes_about_30_events_a_second_in_the_arkit_vocabulary() -> None:
    played = Played()
    played.speech(2.0)
    assert 59 <= len(played.events) <= 61
    times = [event["t"] for event in played.events]
    assert times == sorted(times) and times[-1] == pytest.approx(2.0, abs=0.021)
    assert max(np.diff(times)) <= 0.041
    for event in played.events:
        assert json.loads(json.dumps(event)) == event
        assert event["type"] == "visemes"
        assert set(event["shapes"]) <= set(ARKIT_BLENDSHAPES)
        assert all(0.0 <= value <= 1.0 for value in event["shapes"].values())
    assert max(jaw(played.events)) > 0.5 and min(jaw(played.events)) < 0.2  # it moves


def test_when_speech_stops_the_pose_holds_then_eases_to_neutral_then_goes_quiet() -> None:
    played = Played()
    played.loud_tone(0.5)
    held = played.events[-1]["shapes"]
    assert held["jawOpen"] > 0.7
    speaking = len(played.events)
    played.silence(3.0)
    after = played.events[speaking:]
    end_of_speech = played.events[speaking - 1]["t"]
    hold = [e for e in after if e["t"] <= end_of_speech + 0.1]
    assert hold and all(e["shapes"] == held for e in hold)
    values = [held["jawOpen"], *jaw(after)]
    assert all(b <= a for a, b in itertools.pairwise(values))
    assert max(a - b for a, b in itertools.pairwise(values)) < 0.45 * held["jawOpen"]
    assert after[-1]["shapes"] == neutral_pose()
    assert [e["shapes"] == neutral_pose() for e in after].count(True) == 1
    assert after[-1]["t"] <= end_of_speech + 0.1 + 0.15 + 0.04  # and nothing for 2.7 s more


def test_silence_alone_sends_nothing() -> None:
    played = Played()
    played.silence(2.0)
    assert played.events == []


def test_disabled_visuals_send_nothing() -> None:
    played = Played(enabled=False)
    played.speech(1.0)
    played.silence(1.0)
    assert played.events == []


def test_disabling_mid_pose_sends_one_neutral_pose_and_then_nothing() -> None:
    played = Played()
    played.frame(tone(220, OUTPUT_FRAME_SAMPLES), voiced=True)
    assert played.events[-1]["shapes"]["jawOpen"] > 0.5
    speaking = len(played.events)
    played.enabled = False
    played.speech(1.0)
    played.silence(1.0)
    assert [e["shapes"] for e in played.events[speaking:]] == [neutral_pose()]
    played.enabled = True
    played.speech(1.0)
    assert 29 <= len(played.events) - speaking - 1 <= 31


def test_frames_far_behind_schedule_get_no_event() -> None:
    played = Played()
    played.speech(0.2)
    before = len(played.events)
    for _ in range(10):
        played.frame(syllables(OUTPUT_FRAME_SAMPLES), voiced=True, late_by=0.2)
    assert len(played.events) == before
    assert played.animator.late_dropped > 0
    for _ in range(10):
        played.frame(syllables(OUTPUT_FRAME_SAMPLES), voiced=True, late_by=0.05)
    assert 5 <= len(played.events) - before <= 7


def test_a_failing_animator_logs_once_and_goes_quiet(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def broken_send(event: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("data channel gone")

    animator = VisemeAnimator(broken_send, lambda: True, clock=lambda: 0.0)
    with caplog.at_level(logging.ERROR):
        for index in range(50):
            animator.on_frame(SentFrame(tone(220, OUTPUT_FRAME_SAMPLES), True, False, index / 50))
    assert calls == 1
    assert len(caplog.records) == 1


async def test_the_animator_follows_the_real_output_track() -> None:
    now = [100.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    output = AgentAudioOutput(clock=lambda: now[0], sleep=sleep)
    events: list[dict[str, Any]] = []
    animator = VisemeAnimator(events.append, lambda: True, clock=lambda: now[0])
    output.add_frame_listener(animator.on_frame)
    output.push(syllables(OUTPUT_RATE))  # one second of speech
    for _ in range(100):  # then as much silence
        await output.recv()
    assert 29 <= len(events) <= 40
    assert max(jaw(events)) > 0.5
    assert events[-1]["shapes"] == neutral_pose()
    assert events[-1]["t"] < 1.3
