"""VoiceDeployment status from what was planned and what the children report. Pure.

Conditions keep their `lastTransitionTime` while their status does not change, so writing the
same status twice is a no-op (and a no-op patch is skipped by the caller).
"""

from __future__ import annotations

from typing import Any

from parley_operator.conditions import ConditionType, Reason
from parley_operator.vram import VramPlan


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
    children: dict[str, dict[str, Any] | None],
    previous: dict[str, Any],
    now: str,
    failure: str | None = None,
) -> dict[str, Any]:
    """`children`: component → its Deployment as read from the API (None: not created, or not
    wanted, e.g. an external LLM). `failure`: a reconcile error to report as Degraded."""
    old = previous.get("conditions", [])
    replicas = {name: component_replicas(d) for name, d in children.items()}
    wanted = {name: d for name, d in children.items() if d is not None}
    missing = sorted(n for n, r in replicas.items() if n in wanted and r["ready"] < r["desired"])
    rolling = sorted(n for n, d in wanted.items() if _rolling(d))
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
    runtime = replicas.get("runtime", {"desired": 0, "ready": 0})
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        **replicas,
        "runtimeReplicas": f"{runtime['ready']}/{runtime['desired']}",
        "vramPlan": [g.as_status() for g in plan.gpus],
    }
    for kept in ("sessions", "backpressure", "soak"):
        if kept in previous:
            status[kept] = previous[kept]
    return status
