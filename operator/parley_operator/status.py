"""VoiceDeployment status from what was planned and what the children report. Pure.

Conditions keep their `lastTransitionTime` while their status does not change, so writing the
same status twice is a no-op (and a no-op patch is skipped by the caller). The status is written
as a merge patch: fields other writers own (sessions, backpressure, soak) are left alone, and
conditions of types this module does not compute (SoakPassing) are carried over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley_operator.api import COMPONENTS
from parley_operator.conditions import ConditionType, Reason
from parley_operator.vram import VramPlan

OWN_CONDITIONS = (
    ConditionType.READY,
    ConditionType.PROGRESSING,
    ConditionType.DEGRADED,
    ConditionType.VRAM_BUDGET,
)


def rollout_view(deployment: dict[str, Any]) -> dict[str, Any]:
    """The part of a Deployment the status is computed from (what the operator keeps in memory
    for every child: a few numbers instead of the whole object)."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    return {
        "metadata": {"generation": (deployment.get("metadata") or {}).get("generation", 0)},
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {
            key: status[key]
            for key in ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas")
            if key in status
        },
    }


def freshest(
    watched: dict[str, dict[str, Any]], applied: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per component, the newer of two views of its Deployment: as last seen by the watch, or
    as returned by this reconcile's apply. The watch wins unless it has not seen the object or
    its generation yet: it may be behind the apply for a moment, but a watch event is then on
    its way and recomputes the status, whereas an applied view taken as the last word could
    overwrite a newer status that no later event would correct."""
    views = dict(watched)
    for component, view in applied.items():
        seen = watched.get(component)
        if seen is None or _generation(seen) < _generation(view):
            views[component] = view
    return views


def _generation(view: dict[str, Any]) -> int:
    return int((view.get("metadata") or {}).get("generation", 0) or 0)


def component_replicas(deployment: dict[str, Any] | None) -> dict[str, int]:
    if deployment is None:
        return {"desired": 0, "ready": 0}
    return {
        "desired": int(deployment.get("spec", {}).get("replicas", 0) or 0),
        "ready": int(deployment.get("status", {}).get("readyReplicas", 0) or 0),
    }


def _rolling(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status", {})
    desired = deployment.get("spec", {}).get("replicas", 0) or 0
    return (
        status.get("observedGeneration", 0) < deployment.get("metadata", {}).get("generation", 0)
        or (status.get("updatedReplicas", 0) or 0) < desired
        or (status.get("replicas", 0) or 0) > desired
    )


def condition(
    kind: ConditionType,
    ok: bool,
    reason: Reason,
    message: str,
    generation: int,
    previous: list[dict[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = before["lastTransitionTime"] if before and before.get("status") == status else now
    return {
        "type": kind.value,
        "status": status,
        "reason": reason.value,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def build_status(
    generation: int,
    plan: VramPlan,
    wanted: tuple[str, ...],
    children: dict[str, dict[str, Any]],
    previous: dict[str, Any],
    now: str,
    failure: str | None = None,
) -> dict[str, Any]:
    """`wanted`: the components the spec asks for (no `llm` with an external endpoint).
    `children`: component → its Deployment (or its `rollout_view`), absent while not created.
    `failure`: a reconcile error to report as Degraded."""
    old = previous.get("conditions", [])
    replicas = {name: component_replicas(children.get(name)) for name in wanted}
    missing = sorted(
        n for n in wanted if n not in children or replicas[n]["ready"] < replicas[n]["desired"]
    )
    rolling = sorted(n for n in wanted if n in children and _rolling(children[n]))
    all_ready = plan.fits and not missing and failure is None
    conditions = [
        condition(
            ConditionType.READY,
            all_ready,
            Reason.ALL_REPLICAS_READY if all_ready else Reason.REPLICAS_UNAVAILABLE,
            "every component has its replicas ready"
            if all_ready
            else (
                failure or plan.message
                if not plan.fits or failure
                else "waiting for ready replicas: " + ", ".join(missing)
            ),
            generation,
            old,
            now,
        ),
        condition(
            ConditionType.PROGRESSING,
            bool(rolling),
            Reason.ROLLING_OUT if rolling else Reason.ROLLOUT_COMPLETE,
            ("rolling out: " + ", ".join(rolling)) if rolling else "all rollouts complete",
            generation,
            old,
            now,
        ),
        condition(
            ConditionType.DEGRADED,
            failure is not None,
            Reason.RECONCILE_FAILED if failure else Reason.ALL_REPLICAS_READY,
            failure or "reconciled",
            generation,
            old,
            now,
        ),
        condition(
            ConditionType.VRAM_BUDGET,
            plan.fits,
            Reason(plan.reason),
            plan.message,
            generation,
            old,
            now,
        ),
    ]
    conditions += [c for c in old if c.get("type") not in OWN_CONDITIONS]
    runtime = replicas.get("runtime", {"desired": 0, "ready": 0})
    return {
        "observedGeneration": generation,
        "conditions": conditions,
        **{name: replicas.get(name, {"desired": 0, "ready": 0}) for name in COMPONENTS},
        "runtimeReplicas": f"{runtime['ready']}/{runtime['desired']}",
        "vramPlan": [g.as_status() for g in plan.gpus],
    }


def refused_status(
    generation: int, problem: str, previous: dict[str, Any], now: str
) -> dict[str, Any]:
    """The status of an object whose spec cannot be read: not Ready and Degraded, saying why;
    nothing is planned or applied, so the rest stays as it was."""
    old = previous.get("conditions", [])
    refused = [
        condition(ConditionType.READY, False, Reason.SPEC_REFUSED, problem, generation, old, now),
        condition(ConditionType.DEGRADED, True, Reason.SPEC_REFUSED, problem, generation, old, now),
    ]
    kept = [c for c in old if c.get("type") not in (ConditionType.READY, ConditionType.DEGRADED)]
    return {"observedGeneration": generation, "conditions": refused + kept}


def reconcile_failure(previous: dict[str, Any]) -> str | None:
    """The failure the last reconcile reported, if any: a status refresh between reconciles
    (a child event) keeps it, only a reconcile that succeeds clears it."""
    degraded = find_condition(previous, ConditionType.DEGRADED)
    if degraded.get("status") == "True" and degraded.get("reason") == Reason.RECONCILE_FAILED:
        return str(degraded.get("message", ""))
    return None


def differs(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether writing `status` (a merge patch) would change `previous`."""
    return any(previous.get(key) != value for key, value in status.items())


def find_condition(status: dict[str, Any], kind: ConditionType) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c.get("type") == kind), {})


@dataclass(frozen=True)
class Notice:
    """A Kubernetes Event worth posting: `type` is Normal or Warning."""

    type: str
    reason: str
    message: str


def notable_transitions(before: dict[str, Any], after: dict[str, Any]) -> list[Notice]:
    """Events for the transitions from the status `before` to `after`: the VRAM budget refused,
    every rollout done. Each transition is reported once, when it happens."""
    notices = []
    budget = find_condition(after, ConditionType.VRAM_BUDGET)
    if budget.get("status") == "False" and (
        find_condition(before, ConditionType.VRAM_BUDGET).get("status") != "False"
    ):
        notices.append(Notice("Warning", "VRAMBudgetRefused", budget.get("message", "")))
    if (
        find_condition(before, ConditionType.PROGRESSING).get("status") == "True"
        and find_condition(after, ConditionType.PROGRESSING).get("status") == "False"
    ):
        notices.append(Notice("Normal", "RolloutComplete", "all components rolled out"))
    return notices
