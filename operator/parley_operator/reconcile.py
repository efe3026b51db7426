"""One reconcile: plan, apply the desired children, prune the rest; and the status from what
the children report.

Everything that decides is pure (`plan_vram`, `render`, `build_status`) and takes the typed
`VoiceDeployment`; this module only sequences them around the `Kube` adapter, so the kopf
handlers stay a few lines each.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from parley_operator.api import COMPONENTS, VoiceDeployment, VoiceDeploymentSpec
from parley_operator.kube import Kube
from parley_operator.render import COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, VD_LABEL, render
from parley_operator.status import build_status, refused_status, rollout_view
from parley_operator.vram import VramPlan, plan_vram, selected_gpu_memory_gib


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wanted_components(spec: VoiceDeploymentSpec) -> tuple[str, ...]:
    """The components that run as Deployments: all three, less `llm` for an external server."""
    return tuple(c for c in COMPONENTS if c != "llm" or spec.llm.managed)


def plan_for(spec: VoiceDeploymentSpec, node_labels: Iterable[Mapping[str, str]]) -> VramPlan:
    """Plan `spec` against the GPU memory of the nodes it selects."""
    selector = (spec.gpu.node_selector if spec.gpu else None) or {}
    return plan_vram(spec, selected_gpu_memory_gib(node_labels, selector))


def kept_runtime_replicas(spec: VoiceDeploymentSpec, current: int | None) -> int:
    """The runtime replicas a reconcile applies: what the Deployment has now (the operator is
    its only writer, and the autoscaler moves it), within the spec's bounds; `min` for a new
    Deployment. A reconcile therefore never undoes a scaling decision."""
    bounds = spec.runtime.replicas
    return bounds.min if current is None else max(bounds.min, min(bounds.max, current))


def apply_children(
    kube: Kube,
    vd: VoiceDeployment,
    plan: VramPlan,
    *,
    prune: bool,
    runtime_replicas: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Server-side apply every desired child (blocking); with `prune`, delete the children of
    `vd` that are no longer desired (a managed vLLM replaced by an external endpoint). A new
    object has nothing to prune, so creation skips the three list calls. `runtime_replicas`:
    the runtime Deployment's current `spec.replicas`, if it exists. Returns component → the
    `rollout_view` of its Deployment as applied."""
    replicas = kept_runtime_replicas(vd.spec, runtime_replicas)
    desired = render(vd, plan, runtime_replicas=replicas)
    applied = {}
    for manifest in desired:
        stored = kube.apply(manifest)
        if manifest["kind"] == "Deployment":
            applied[manifest["metadata"]["labels"][COMPONENT_LABEL]] = rollout_view(stored)
    if prune:
        namespace = vd.metadata.namespace
        selector = f"{VD_LABEL}={vd.metadata.name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        wanted = {(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in desired}
        for api_version, kind, name in kube.children(namespace, selector):
            if (api_version, kind, name) not in wanted:
                kube.delete(api_version, kind, namespace, name)
    return applied


def compute_status(
    vd: VoiceDeployment,
    plan: VramPlan,
    children: dict[str, dict[str, Any]],
    previous: dict[str, Any],
    failure: str | None = None,
) -> dict[str, Any]:
    wanted = wanted_components(vd.spec)
    return build_status(vd.metadata.generation, plan, wanted, children, previous, _now(), failure)


def compute_refused_status(
    obj: Mapping[str, Any], problem: str, previous: dict[str, Any]
) -> dict[str, Any]:
    """The status of an object whose spec the models refuse (`obj` as the API returned it)."""
    generation = int(obj["metadata"].get("generation", 0))
    return refused_status(generation, problem, previous, _now())
