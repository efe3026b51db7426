"""VoiceDeployment status from what was planned and what the children report, and from the
autoscaler's decisions. Pure.

Conditions keep their `lastTransitionTime` while their status does not change, so writing the
same status twice is a no-op (and a no-op patch is skipped by the caller). The status is written
as merge patches, each writer's with its own fields: a reconcile's leaves the scaling fields
(`scaling`, `sessions`, `backpressure`) and `soak` alone, and every writer carries over the
conditions it does not compute (the reconcile computes `RECONCILED_CONDITIONS`, the autoscaler
SignalsAvailable, the soak SoakPassing).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from parley.scos import BackpressureLevel
from parley_operator.api import COMPONENTS
from parley_operator.api.schema import MAX_SCALING_DECISIONS
from parley_operator.conditions import ConditionType, Reason
from parley_operator.scaling import Decision, Direction, PodSignal, ScalingPolicy
from parley_operator.vram import VramPlan

#: The conditions a reconcile computes.
RECONCILED_CONDITIONS = (
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
    conditions += [c for c in old if c.get("type") not in RECONCILED_CONDITIONS]
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
    every rollout done, SCOS missing for long. Each transition is reported once, when it
    happens."""
    notices = []
    budget = find_condition(after, ConditionType.VRAM_BUDGET)
    if budget.get("status") == "False" and (
        find_condition(before, ConditionType.VRAM_BUDGET).get("status") != "False"
    ):
        notices.append(Notice("Warning", "VRAMBudgetRefused", budget.get("message", "")))
    signals = find_condition(after, ConditionType.SIGNALS_AVAILABLE)
    if signals.get("status") == "False" and (
        find_condition(before, ConditionType.SIGNALS_AVAILABLE).get("status") != "False"
    ):
        notices.append(Notice("Warning", Reason.SCRAPE_FAILING, signals.get("message", "")))
    if (
        find_condition(before, ConditionType.PROGRESSING).get("status") == "True"
        and find_condition(after, ConditionType.PROGRESSING).get("status") == "False"
    ):
        notices.append(Notice("Normal", "RolloutComplete", "all components rolled out"))
    return notices


# -- autoscaling -------------------------------------------------------------------------------

#: A pod's SCOS missing for this many scaling intervals in a row makes SignalsAvailable False
#: (and posts a ScrapeFailing Event); a blip of one or two reads does not. It stays False while
#: any pod's SCOS is missing (pods that never answer, replaced by others, are one failure).
SCRAPE_FAILING_INTERVALS = 3
#: The longest decision reason kept in status and Events.
MAX_REASON = 500


class ScalingCause(StrEnum):
    """Why a decision went its way, as a small fixed set (a metrics label, and in status)."""

    MIN = "min"  # up: below replicas.min
    DEMAND = "demand"  # up: the sessions ask for more pods
    BACKPRESSURE = "backpressure"  # up: a pod stayed at ADMISSION_LIMITED or above
    UNDRAIN = "undrain"  # up: draining pods taken back, no pod added
    LOW_DEMAND = "low_demand"  # down: a drain started after the low-demand window
    ABOVE_MAX = "above_max"  # down: a drain started because replicas.max was lowered
    DRAINED = "drained"  # down: replicas lowered by drained pods that reached 0 sessions
    DRAIN_TIMEOUT = "drain_timeout"  # down: ... of which one still had sessions at the timeout
    STEADY = "steady"  # hold
    SCRAPE_FAILED = "scrape_failed"  # hold, with a pod's SCOS missing
    DISABLED = "disabled"  # hold: scaling.enabled is false


def timestamp(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def timed_out(decision: Decision, pods: Sequence[PodSignal]) -> tuple[str, ...]:
    """The drained pods whose sessions were not known to be 0: their drain timed out."""
    active = {p.name: p.scos.sessions.active for p in pods if p.scos is not None}
    return tuple(name for name in decision.drained if active.get(name) != 0)


def decision_cause(
    policy: ScalingPolicy, replicas_before: int, decision: Decision, pods: Sequence[PodSignal]
) -> ScalingCause:
    if decision.direction == Direction.UP:
        if decision.replicas == replicas_before:
            return ScalingCause.UNDRAIN
        if replicas_before < policy.min_replicas:
            return ScalingCause.MIN
        if decision.demand.replicas >= decision.replicas:
            return ScalingCause.DEMAND
        return ScalingCause.BACKPRESSURE
    if decision.direction == Direction.DOWN:
        if decision.drained:
            return ScalingCause.DRAIN_TIMEOUT if timed_out(decision, pods) else ScalingCause.DRAINED
        # A drain started: above max, the pods kept after it are still at least max.
        kept = decision.replicas - len(decision.state.draining)
        return ScalingCause.ABOVE_MAX if kept >= policy.max_replicas else ScalingCause.LOW_DEMAND
    if not policy.enabled:
        return ScalingCause.DISABLED
    return ScalingCause.SCRAPE_FAILED if decision.unscraped else ScalingCause.STEADY


def decision_notices(
    replicas_before: int, decision: Decision, cause: ScalingCause, cut: Mapping[str, int]
) -> list[Notice]:
    """The Events of one decision: one per decision that changes something, and a warning
    naming the drained pods that still had sessions (`cut`: pod → sessions) at the timeout."""
    if decision.direction == Direction.HOLD:
        return []
    reason = "ScaleUp" if decision.direction == Direction.UP else "ScaleDown"
    message = (
        f"replicas {replicas_before} → {decision.replicas} ({cause}): "
        f"{decision.reason[:MAX_REASON]}"
    )
    notices = [Notice("Normal", reason, message)]
    if any(cut.values()):
        pods = ", ".join(f"{name} ({n})" for name, n in sorted(cut.items()) if n)
        notices.append(
            Notice("Warning", "SessionsCut", f"drain timed out with sessions still live: {pods}")
        )
    return notices


def scaling_status(
    previous: dict[str, Any],
    *,
    policy: ScalingPolicy,
    generation: int,
    replicas_before: int,
    pods: Sequence[PodSignal],
    decision: Decision,
    cause: ScalingCause,
    failures: Mapping[str, str],
    now: float,
) -> dict[str, Any]:
    """The status patch of one autoscaler round: `status.scaling` (every field, always: a merge
    patch would keep a field left out), the printer columns `sessions` and `backpressure`, and
    SignalsAvailable. `pods`: the round's signals; `failures`: pod → why its read failed."""
    gone = {*decision.state.draining, *decision.state.retired}
    answered = [(p.name, p.scos) for p in pods if p.scos is not None and p.name not in gone]
    capacity = sum(scos.sessions.capacity for _, scos in answered if not scos.draining)
    top = max((scos.backpressure.level for _, scos in answered), default=BackpressureLevel.NORMAL)
    at_top = sorted(n for n, scos in answered if scos.backpressure.level == top) if top else []
    decisions = list((previous.get("scaling") or {}).get("decisions") or [])
    if decision.direction != Direction.HOLD:
        entry = {
            "time": timestamp(now),
            "direction": decision.direction.value,
            "from": replicas_before,
            "to": decision.replicas,
            "cause": cause.value,
            "reason": decision.reason[:MAX_REASON],
        }
        decisions.insert(0, entry)
    old = previous.get("conditions") or []
    signals = _signals_condition(policy, generation, decision, failures, old, now)
    conditions = [signals if c.get("type") == signals["type"] else c for c in old]
    if signals not in conditions:
        conditions.append(signals)
    return {
        "scaling": {
            "desiredReplicas": decision.replicas,
            "currentReplicas": len(pods),
            "sessions": decision.demand.sessions,
            "capacity": capacity,
            "highestBackpressure": {"level": int(top), "name": top.name, "pods": at_top},
            "unscrapedPods": list(decision.unscraped),
            "drainingPods": sorted(decision.state.draining),
            "decisions": decisions[:MAX_SCALING_DECISIONS],
        },
        "sessions": decision.demand.sessions,
        "backpressure": top.name,
        "conditions": conditions,
    }


def _signals_condition(
    policy: ScalingPolicy,
    generation: int,
    decision: Decision,
    failures: Mapping[str, str],
    old: list[dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    since = decision.unscraped_since
    was = find_condition({"conditions": old}, ConditionType.SIGNALS_AVAILABLE)
    failing = since is not None and (
        now - since >= SCRAPE_FAILING_INTERVALS * policy.interval_s or was.get("status") == "False"
    )
    if failing and since is not None:
        pods = ", ".join(
            f"{name} ({failures[name]})" if name in failures else name
            for name in decision.unscraped
        )
        message = (
            f"no SCOS from runtime pod(s) {pods} since {timestamp(since)}: the replicas hold "
            "and no drain starts or ends until they answer"
        )
        return condition(
            ConditionType.SIGNALS_AVAILABLE,
            False,
            Reason.SCRAPE_FAILING,
            message,
            generation,
            old,
            timestamp(now),
        )
    return condition(
        ConditionType.SIGNALS_AVAILABLE,
        True,
        Reason.SCOS_READ,
        "SCOS read from the runtime pods",
        generation,
        old,
        timestamp(now),
    )
