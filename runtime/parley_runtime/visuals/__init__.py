"""Runtime visuals: ARKit-52 mouth shapes driven by the agent audio as it is played, sent as
`visemes` events on the data channel (the first thing backpressure turns off)."""

from parley_runtime.visuals.animator import VisemeAnimator, visemes_event
from parley_runtime.visuals.shapes import (
    ARKIT_BLENDSHAPES,
    MOUTH_SHAPES,
    HoldThenEase,
    Pose,
    is_neutral,
    loudness,
    mouth_shapes,
    neutral_pose,
    roundness,
    smooth,
    smoothstep,
)

__all__ = [
    "ARKIT_BLENDSHAPES",
    "MOUTH_SHAPES",
    "HoldThenEase",
    "Pose",
    "VisemeAnimator",
    "is_neutral",
    "loudness",
    "mouth_shapes",
    "neutral_pose",
    "roundness",
    "smooth",
    "smoothstep",
    "visemes_event",
]
