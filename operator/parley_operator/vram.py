"""The VRAM planner: which component goes on which GPU, and with what cap. Pure.

Per GPU the working cap is memory − headroom. In `exclusive` placement every GPU component
has GPUs of its own, so each cap must fit the working cap; in `shared` placement the three
components share one GPU and their caps must fit it together. The apiserver's CEL rules
refuse most over-budget specs; the planner is what catches what only reconcile time can see
(the nodes' real GPU memory) and what reports the arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from parley_operator.api import VoiceDeploymentSpec
from parley_operator.conditions import Reason

#: GPU Feature Discovery reports usable MiB, a little under the marketed size that people write
#: in specs (an H100 80GB reports 81559 MiB = 79.6 GiB, an L4 "24GB" 23034 MiB = 22.5 GiB).
#: Nodes are judged too small only below 90 % of the spec's memoryGiB.
REPORTED_MEMORY_SLACK = 0.9


@dataclass(frozen=True)
class ComponentCap:
    component: str
    gpus: int
    vram_gib: float
    utilization: float  # vram_gib / GPU memory: vLLM's --gpu-memory-utilization


@dataclass(frozen=True)
class GPUAssignment:
    gpu: str
    components: tuple[str, ...]
    cap_gib: float
    used_gib: float

    def as_status(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "components": list(self.components),
            "capGiB": self.cap_gib,
            "usedGiB": self.used_gib,
        }


@dataclass(frozen=True)
class VramPlan:
    fits: bool
    reason: str
    message: str
    working_cap_gib: float | None
    components: dict[str, ComponentCap]
    gpus: tuple[GPUAssignment, ...]


#: GPU Feature Discovery's node label: the memory of each of the node's GPUs, in MiB.
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"


def selected_gpu_memory_gib(
    node_labels: Iterable[Mapping[str, str]], node_selector: Mapping[str, str]
) -> float | None:
    """The smallest GPU memory among the nodes `node_selector` picks, from their labels; None
    without a selector (the pods may land on any GPU node, so none is held against the spec)
    or when no selected node reports its GPU memory."""
    if not node_selector:
        return None
    memories = [
        int(labels[GPU_MEMORY_LABEL]) / 1024
        for labels in node_labels
        if labels.get(GPU_MEMORY_LABEL, "").isdigit()
        and all(labels.get(key) == value for key, value in node_selector.items())
    ]
    return min(memories) if memories else None


def _num(value: float) -> str:
    return f"{round(value, 1):g}"


def plan_vram(spec: VoiceDeploymentSpec, node_gpu_memory_gib: float | None = None) -> VramPlan:
    """Plan `spec`. `node_gpu_memory_gib`: the smallest GPU memory of the nodes the spec
    selects, when known (from GPU Feature Discovery's labels)."""
    using = spec.gpu_requests()
    gpu = spec.gpu
    if not using or gpu is None:
        return VramPlan(True, Reason.NO_GPU, "no component uses a GPU", None, {}, ())
    memory = float(gpu.memory_gib)
    headroom = float(gpu.headroom_gib)
    cap = memory - headroom
    components = {
        name: ComponentCap(name, g.count, float(g.vram_gib), round(float(g.vram_gib) / memory, 4))
        for name, g in using.items()
    }
    if gpu.placement == "shared":
        used = sum(c.vram_gib for c in components.values())
        gpus: tuple[GPUAssignment, ...] = (GPUAssignment("shared-0", tuple(components), cap, used),)
    else:
        gpus = tuple(
            GPUAssignment(f"{name}-0", (name,), cap, c.vram_gib) for name, c in components.items()
        )
    if node_gpu_memory_gib is not None and node_gpu_memory_gib < memory * REPORTED_MEMORY_SLACK:
        return VramPlan(
            False,
            Reason.NODE_GPU_SMALLER_THAN_SPEC,
            f"the selected nodes' GPUs have {_num(node_gpu_memory_gib)} GiB but the spec "
            f"assumes gpu.memoryGiB {_num(memory)}",
            cap,
            components,
            gpus,
        )
    for assignment in gpus:
        if assignment.used_gib > cap:
            terms = " + ".join(_num(components[c].vram_gib) for c in assignment.components)
            shared = len(assignment.components) > 1
            return VramPlan(
                False,
                Reason.SHARED_GPU_OVERCOMMITTED if shared else Reason.OVER_WORKING_CAP,
                f"{'+'.join(assignment.components)} on {assignment.gpu}: {terms} = "
                f"{_num(assignment.used_gib)} GiB > {_num(memory)} - {_num(headroom)} = "
                f"{_num(cap)} GiB working cap",
                cap,
                components,
                gpus,
            )
    summary = ", ".join(f"{a.gpu}: {_num(a.used_gib)}/{_num(cap)} GiB" for a in gpus)
    return VramPlan(True, Reason.WITHIN_BUDGET, f"within budget ({summary})", cap, components, gpus)
