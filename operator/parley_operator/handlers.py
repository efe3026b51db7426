"""The kopf handlers: thin adapters over `reconcile`.

- create / update (spec) / resume of a VoiceDeployment: plan, apply children, write status;
- any event of a child Deployment: recompute the owner's status (ready replicas, rollouts);
- Events on notable transitions: a VRAM budget refused, a rollout done.
Handlers are synchronous; kopf runs them in its thread pool.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from typing import Any

import kopf
import kubernetes

from parley_operator.api import GROUP, PLURAL, VERSION
from parley_operator.conditions import ConditionType
from parley_operator.kube import Kube
from parley_operator.reconcile import apply_children, observe, plan_for
from parley_operator.render import MANAGED_BY, VD_LABEL


@cache
def kube() -> Kube:
    return Kube()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's client login, honouring $KUBECONFIG as it is now (the kubernetes client reads it
    once, at import)."""
    if os.environ.get("KUBECONFIG"):
        kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = os.environ["KUBECONFIG"]
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300


def _condition(status: dict[str, Any], kind: ConditionType) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c.get("type") == kind), {})


def _write_status(vd: dict[str, Any], before: dict[str, Any], status: dict[str, Any]) -> None:
    meta = vd["metadata"]
    body = kopf.Body(vd)  # type: ignore[arg-type]  # a raw object as read from the API
    kube().patch_status(meta["namespace"], meta["name"], status)
    budget_before = _condition(before, ConditionType.VRAM_BUDGET).get("status")
    budget = _condition(status, ConditionType.VRAM_BUDGET)
    if budget["status"] == "False" and budget_before != "False":
        kopf.warn(body, reason="VRAMBudgetRefused", message=budget["message"])
    rolling_before = _condition(before, ConditionType.PROGRESSING).get("status")
    if (
        rolling_before == "True"
        and _condition(status, ConditionType.PROGRESSING)["status"] == "False"
    ):
        kopf.info(body, reason="RolloutComplete", message="all components rolled out")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile(body: kopf.Body, **_: Any) -> None:
    vd = dict(body)
    plan = plan_for(kube(), vd["spec"])
    if plan.fits:
        apply_children(kube(), vd, plan)
    outcome = observe(kube(), vd, plan)
    if outcome.changed:
        _write_status(vd, vd.get("status") or {}, outcome.status)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def child_changed(body: kopf.Body, **_: Any) -> None:
    meta = body.get("metadata", {})
    owner = (meta.get("labels") or {}).get(VD_LABEL)
    if not owner:
        return
    vd = kube().voice_deployment(meta["namespace"], owner)
    if vd is None or vd["metadata"].get("deletionTimestamp"):
        return
    outcome = observe(kube(), vd, plan_for(kube(), vd["spec"]))
    if outcome.changed:
        _write_status(vd, vd.get("status") or {}, outcome.status)
