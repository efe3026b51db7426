"""The VRAM planner, as a pure function of the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from parley_operator.api import VoiceDeploymentSpec
from parley_operator.conditions import Reason
from parley_operator.vram import plan_vram

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def spec(name: str, **changes: Any) -> VoiceDeploymentSpec:
    loaded = yaml.safe_load((EXAMPLES / name).read_text())["spec"]
    for path, value in changes.items():
        target = loaded
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return VoiceDeploymentSpec.model_validate(loaded)


def test_exclusive_gives_each_component_its_own_gpu_and_vllm_its_utilization() -> None:
    plan = plan_vram(spec("gpu-exclusive.yaml"))
    assert plan.fits and plan.reason == Reason.WITHIN_BUDGET
    assert plan.working_cap_gib == 76
    assert plan.components["llm"].utilization == 0.45  # 36 / 80
    assert [(g.gpu, g.components, g.used_gib) for g in plan.gpus] == [
        ("runtime-0", ("runtime",), 6),
        ("llm-0", ("llm",), 36),
        ("tts-0", ("tts",), 8),
    ]


def test_shared_packs_the_three_on_one_gpu_exactly_at_the_cap() -> None:
    plan = plan_vram(spec("gpu-shared.yaml"))
    assert plan.fits
    (gpu,) = plan.gpus
    assert gpu.components == ("runtime", "llm", "tts") and gpu.used_gib == gpu.cap_gib == 20


def test_shared_overcommit_reports_the_arithmetic() -> None:
    plan = plan_vram(spec("invalid/too-big.yaml"))
    assert not plan.fits and plan.reason == Reason.SHARED_GPU_OVERCOMMITTED
    assert "2 + 13 + 6 = 21 GiB > 24 - 4 = 20 GiB working cap" in plan.message


def test_exclusive_over_the_working_cap() -> None:
    plan = plan_vram(spec("gpu-exclusive.yaml", llm__gpu={"count": 1, "vramGiB": 77}))
    assert not plan.fits and plan.reason == Reason.OVER_WORKING_CAP
    assert "llm on llm-0: 77 = 77 GiB > 80 - 4 = 76 GiB" in plan.message


def test_nodes_with_smaller_gpus_than_the_spec_assumes() -> None:
    plan = plan_vram(spec("gpu-exclusive.yaml"), node_gpu_memory_gib=40)
    assert not plan.fits and plan.reason == Reason.NODE_GPU_SMALLER_THAN_SPEC
    assert "40 GiB" in plan.message and "80" in plan.message
    assert plan_vram(spec("gpu-exclusive.yaml"), node_gpu_memory_gib=80).fits


def test_no_gpu() -> None:
    plan = plan_vram(spec("cpu.yaml"))
    assert plan.fits and plan.reason == Reason.NO_GPU and plan.gpus == ()


@pytest.mark.parametrize("headroom", [0, 4, 10])
def test_headroom_moves_the_cap(headroom: int) -> None:
    plan = plan_vram(spec("gpu-shared.yaml", gpu__headroomGiB=headroom))
    assert plan.working_cap_gib == 24 - headroom
    assert plan.fits is (24 - headroom >= 20)


def test_status_shape() -> None:
    (gpu,) = plan_vram(spec("gpu-shared.yaml")).gpus
    assert gpu.as_status() == {
        "gpu": "shared-0",
        "components": ["runtime", "llm", "tts"],
        "capGiB": 20,
        "usedGiB": 20,
    }
