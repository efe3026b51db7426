"""One reconcile: plan, apply the desired children, prune the rest, compute the status.

Everything that decides is pure (`plan_vram`, `render`, `build_status`); this module only
sequences them around the `Kube` adapter, so the kopf handlers stay one line each.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from parley_operator.kube import Kube
from parley_operator.render import COMPONENTS, MANAGED_BY, VD_LABEL, child_name, render
from parley_operator.status import build_status
from parley_operator.vram import VramPlan, plan_vram


@dataclass
class Outcome:
    plan: VramPlan
    status: dict[str, Any]
    changed: bool  # the status differs from what the object had


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_for(kube: Kube, spec: dict[str, Any]) -> VramPlan:
    """Plan with the GPU memory of the nodes the spec selects (without a node selector the
    pods may land on any GPU node, so no node is held against the spec)."""
    selector = (spec.get("gpu") or {}).get("nodeSelector") or {}
    return plan_vram(spec, kube.node_gpu_memory_gib(selector) if selector else None)


def _selector(vd: dict[str, Any]) -> str:
    return f"{VD_LABEL}={vd['metadata']['name']},app.kubernetes.io/managed-by={MANAGED_BY}"


def apply_children(kube: Kube, vd: dict[str, Any], plan: VramPlan) -> None:
    namespace = vd["metadata"]["namespace"]
    desired = render(vd, plan)
    wanted = {(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in desired}
    for manifest in desired:
        kube.apply(manifest)
    for api_version, kind, name in kube.children(namespace, _selector(vd)):
        if (api_version, kind, name) not in wanted:
            kube.delete(api_version, kind, namespace, name)


def observe(kube: Kube, vd: dict[str, Any], plan: VramPlan) -> Outcome:
    namespace = vd["metadata"]["namespace"]
    children = {c: kube.deployment(namespace, child_name(vd, c)) for c in COMPONENTS}
    previous = vd.get("status") or {}
    status = build_status(vd["metadata"].get("generation", 0), plan, children, previous, _now())
    return Outcome(plan, status, _differs(previous, status))


def _differs(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    return any(previous.get(key) != value for key, value in status.items())
