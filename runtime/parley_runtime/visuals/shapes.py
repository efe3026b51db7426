"""Mouth shapes from played audio, and the hold-then-ease that keeps them from snapping.

Pure: numpy in, numbers out, time passed in as arguments; no clock, no I/O. The animator
(`animator.py`) feeds it the agent audio that actually left the track.

The face is neutral: only the jaw and mouth follow the audio and every other ARKit-52 shape
stays at 0 (no emotion is inferred). Loudness opens the jaw, on a dB scale with a noise floor
so that hiss does not move it; where the sound sits in the spectrum rounds the lips (rounded
vowels such as "oo" and "oh" keep their energy below 1 kHz, "ee" and fricatives reach far
above it); quiet moments inside speech press the lips together.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from parley.pcm import OUTPUT_RATE

#: Apple ARKit's 52 face blendshapes: the only names a `visemes` event may carry.
ARKIT_BLENDSHAPES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)  # fmt: skip

#: The shapes the audio drives; the smiles are sent, at 0, so a client sees a full neutral set.
MOUTH_SHAPES: tuple[str, ...] = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmileLeft",
    "mouthSmileRight",
)

Pose = dict[str, float]

# Loudness: RMS in dBFS mapped linearly onto 0..1 between these two points.
NOISE_FLOOR_DB = -50.0
FULL_OPEN_DB = -8.0
# Below this share of the loudness range the mouth is still considered silent.
PRESENCE_LEVEL = 0.15
# Lips press together when speech is this quiet (a share of the loudness range) or quieter.
CLOSED_LIPS_LEVEL = 0.35
# Spectral balance: energy above 1 kHz relative to 80 Hz-1 kHz, in dB. At or below
# ROUNDED_DB the lips are fully rounded, at or above SPREAD_DB not at all.
LOW_BAND_HZ = (80.0, 1000.0)
HIGH_BAND_HZ = (1000.0, 8000.0)
ROUNDED_DB = -22.0
SPREAD_DB = -10.0
_FULL_SCALE = 32768.0


def neutral_pose() -> Pose:
    return dict.fromkeys(MOUTH_SHAPES, 0.0)


def is_neutral(pose: Pose) -> bool:
    return not any(pose.values())


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def loudness(pcm: np.ndarray) -> float:
    """0..1: RMS on a dB scale, 0 at or under the noise floor."""
    if pcm.size == 0:
        return 0.0
    samples = pcm.astype(np.float32)
    rms = math.sqrt(float(np.dot(samples, samples)) / samples.size)
    if rms <= 0.0:
        return 0.0
    decibels = 20.0 * math.log10(rms / _FULL_SCALE)
    return _clamp((decibels - NOISE_FLOOR_DB) / (FULL_OPEN_DB - NOISE_FLOOR_DB))


@lru_cache(maxsize=8)
def _spectrum_plan(size: int, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hann window and the two band masks for one window length (a few lengths recur)."""
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    low = (freqs >= LOW_BAND_HZ[0]) & (freqs < LOW_BAND_HZ[1])
    high = (freqs >= HIGH_BAND_HZ[0]) & (freqs < HIGH_BAND_HZ[1])
    return np.hanning(size).astype(np.float32), low, high


def roundness(pcm: np.ndarray, rate: int = OUTPUT_RATE) -> float:
    """0..1: how much of the energy stays low (rounded lips) rather than high (spread)."""
    if pcm.size < 64:
        return 0.0
    window, low_band, high_band = _spectrum_plan(pcm.size, rate)
    power = np.abs(np.fft.rfft(pcm.astype(np.float32) * window)) ** 2
    low = float(power[low_band].sum())
    high = float(power[high_band].sum())
    if low <= 0.0:
        return 0.0
    balance_db = 10.0 * math.log10(max(high, 1e-9 * low) / low)
    return _clamp((SPREAD_DB - balance_db) / (SPREAD_DB - ROUNDED_DB))


def mouth_shapes(pcm: np.ndarray, rate: int = OUTPUT_RATE) -> Pose:
    """The raw pose for one window of mono int16 audio (a few tens of ms); silence is neutral."""
    level = loudness(pcm)
    if level == 0.0:
        return neutral_pose()
    presence = _clamp(level / PRESENCE_LEVEL)
    rounded = roundness(pcm, rate)
    pose = neutral_pose()
    pose["jawOpen"] = level
    # ARKit's mouthClose closes the lips over an open jaw, so it never exceeds jawOpen.
    pose["mouthClose"] = min(level, presence * _clamp(1.0 - level / CLOSED_LIPS_LEVEL))
    pose["mouthFunnel"] = rounded * level  # rounded and open: "oh"
    pose["mouthPucker"] = rounded * presence * (1.0 - level)  # rounded and nearly shut: "oo"
    return pose


def smooth(
    previous: Pose, target: Pose, dt_s: float, attack_s: float = 0.02, release_s: float = 0.06
) -> Pose:
    """One-pole smoothing per shape: quick to open, slower to close, so it does not flicker."""
    smoothed: Pose = {}
    for name, goal in target.items():
        start = previous.get(name, 0.0)
        tau = attack_s if goal > start else release_s
        smoothed[name] = start + (goal - start) * (1.0 - math.exp(-max(dt_s, 0.0) / tau))
    return smoothed


def smoothstep(progress: float) -> float:
    """0..1 with zero slope at both ends: the ease has no corner where it starts or stops."""
    p = _clamp(progress)
    return p * p * (3.0 - 2.0 * p)


class HoldThenEase:
    """What the face shows once the audio stops driving it.

    `show(pose, now)` records the live pose; `keep(now)` says it is still live. Later,
    `pose_at(now)` holds it for `hold_ms` (a gap between two sentences should not make the
    mouth flap), then eases every shape to 0 over `ease_ms` along a smoothstep, reaching
    exactly neutral at the end. Times are seconds on any clock the caller chooses.
    """

    def __init__(self, hold_ms: int = 100, ease_ms: int = 150) -> None:
        if not 100 <= ease_ms <= 300:
            raise ValueError(f"ease_ms must be within 100-300, got {ease_ms}")
        if hold_ms < 0:
            raise ValueError(f"hold_ms must not be negative, got {hold_ms}")
        self.hold_s = hold_ms / 1000
        self.ease_s = ease_ms / 1000
        self._pose = neutral_pose()
        self._since = -math.inf

    def show(self, pose: Pose, now: float) -> None:
        self._pose = dict(pose)
        self._since = now

    def keep(self, now: float) -> None:
        self._since = max(self._since, now)

    def pose_at(self, now: float) -> Pose:
        progress = self._progress(now)
        if progress <= 0.0:
            return dict(self._pose)
        scale = 1.0 - smoothstep(progress)
        return {name: value * scale for name, value in self._pose.items()}

    def settled(self, now: float) -> bool:
        """True once `pose_at(now)` is neutral."""
        return self._progress(now) >= 1.0 or is_neutral(self._pose)

    def _progress(self, now: float) -> float:
        return (now - self._since - self.hold_s) / self.ease_s
