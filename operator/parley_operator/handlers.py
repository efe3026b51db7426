"""The kopf handlers: thin adapters over `reconcile` and `publish`.

- Indexes, kept in memory by kopf from its watches: the VoiceDeployments, their child
  Deployments (a few numbers each) by owner, the GPU nodes' labels. Reconciles and status
  refreshes read these instead of the API, so a child event costs at most one status patch.
- Create / update (spec) / resume of a VoiceDeployment: parse it into the typed
  `VoiceDeployment` (once, here at the edge), plan, apply the children, publish the status. A
  spec that cannot be rendered, or an apply the apiserver refuses, is reported as Degraded (the
  refused apply is retried); a spec the models refuse is Degraded and a permanent handler
  error (kopf posts it as an Event) until the spec changes.
- Any event of a child Deployment: recompute the owner's status; a deleted child is put back.
- Events on notable transitions (a VRAM budget refused, a rollout done), each posted once.
- The autoscaler (`autoscaler.py`): a loop per VoiceDeployment, started on its first event,
  over an index of the runtime pods; and the operator's `/metrics` (`metrics.py`).

Handlers are coroutines: they read the indexes on the event loop, where kopf updates them, and
call the blocking Kubernetes client in worker threads (`PARLEY_OPERATOR_WORKERS`, default 16).
kopf passes each index to every handler as a keyword argument named after it; its handler
protocols do not list those, hence the `type: ignore[arg-type]` on the decorators that take one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from parley_operator import metrics
from parley_operator.api import GROUP, KIND, PLURAL, VERSION, InvalidSpec, VoiceDeployment
from parley_operator.autoscaler import (
    RUNTIME_POD_SELECTOR,
    RUNTIME_PODS,
    STATE_ANNOTATION,
    Autoscaler,
    Indexes,
    RuntimePod,
    RuntimeReplicas,
)
from parley_operator.kube import Kube
from parley_operator.publish import StatusPublisher
from parley_operator.reconcile import (
    apply_children,
    compute_refused_status,
    compute_status,
    plan_for,
)
from parley_operator.render import (
    COMPONENT_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    VD_LABEL,
    runtime_admin_secret,
)
from parley_operator.settings import default_images
from parley_operator.soak import handlers as soak_handlers  # noqa: F401 (registers them)
from parley_operator.status import Notice, freshest, reconcile_failure, rollout_view
from parley_operator.vram import GPU_MEMORY_LABEL, VramPlan

#: The labels that mark the operator's children.
OWNED = {MANAGED_BY_LABEL: MANAGED_BY}
WORKERS = int(os.environ.get("PARLEY_OPERATOR_WORKERS", "16"))
#: Seconds before an apply the apiserver refused is tried again.
RETRY_DELAY_S = 30
log = logging.getLogger(__name__)


@cache
def kube() -> Kube:
    """The adapter, built on first use in a worker thread (building it reads the API's
    discovery documents, which must not block the event loop)."""
    return Kube(connections=WORKERS)


async def _patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    await asyncio.to_thread(lambda: kube().patch_status(namespace, name, status))


@cache
def runtime_replicas() -> RuntimeReplicas:
    return RuntimeReplicas()


async def _apply(
    vd: VoiceDeployment, plan: VramPlan, children: dict[str, Any], *, prune: bool
) -> dict[str, Any]:
    key = (vd.metadata.namespace, vd.metadata.name)
    # The runtime's admin token, before the pods that mount it: created once (an existing
    # Secret is kept, with its token), never applied again.
    secret = runtime_admin_secret(vd, secrets.token_urlsafe(32))
    await asyncio.to_thread(lambda: kube().create(secret))
    async with runtime_replicas().lock(key):  # the autoscaler's turn waits
        runtime = runtime_replicas().freshest(key, children.get("runtime"))
        current = None if runtime is None else int(runtime["spec"]["replicas"])
        applied = await asyncio.to_thread(
            lambda: apply_children(kube(), vd, plan, prune=prune, runtime_replicas=current)
        )
        runtime_replicas().record(key, applied.get("runtime"))
    return applied


def _post(vd: dict[str, Any], notice: Notice) -> None:
    kopf.event(vd, type=notice.type, reason=notice.reason, message=notice.message)  # type: ignore[arg-type]


@cache
def publisher() -> StatusPublisher:
    return StatusPublisher(_patch_status, _post)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's client login, honouring $KUBECONFIG as it is now (the kubernetes client reads it
    once, at import). The adapter is built again from the credentials just loaded, so that it
    acts as the same identity as kopf (after a re-login, or an operator started again in one
    process with other credentials)."""
    if os.environ.get("KUBECONFIG"):
        kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = os.environ["KUBECONFIG"]
    connection = kopf.login_via_client(**kwargs)
    kube.cache_clear()
    return connection


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 300
    executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="kube")
    asyncio.get_running_loop().set_default_executor(executor)


# -- indexes ---------------------------------------------------------------------------------


def _view(body: Mapping[str, Any]) -> dict[str, Any]:
    """A VoiceDeployment as the reconcile parses it (and as the status publisher and Events
    need to refer to it)."""
    meta = body["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "generation", "deletionTimestamp")
            if key in meta
        },
        "spec": body.get("spec") or {},
        "status": body.get("status") or {},
    }


@kopf.index(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def voice_deployments(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _view(body)}


@kopf.index(  # type: ignore[arg-type]
    "apps", "v1", "deployments", labels=OWNED
)
def children_by_owner(
    body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any
) -> dict[Any, Any] | None:
    owner, component = labels.get(VD_LABEL), labels.get(COMPONENT_LABEL)
    if not owner or not component:
        return None
    return {(namespace, owner): (component, rollout_view(dict(body)))}


@kopf.index("v1", "nodes")
def gpu_nodes(labels: kopf.Labels, **_: Any) -> dict[None, dict[str, str]] | None:
    """All GPU nodes' labels under one key (a bare dict would be read as keys → values)."""
    return {None: dict(labels)} if GPU_MEMORY_LABEL in labels else None


@kopf.index("v1", "pods", labels=RUNTIME_PODS)  # type: ignore[arg-type]
def runtime_pods(
    body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any
) -> dict[Any, Any] | None:
    owner = labels.get(VD_LABEL)
    return {(namespace, owner): RuntimePod.from_body(body)} if owner else None


def _children(index: kopf.Index[Any, Any], namespace: str, owner: str) -> dict[str, Any]:
    return dict(index.get((namespace, owner), ()))


def _nodes(index: kopf.Index[Any, Any]) -> Iterable[Mapping[str, str]]:
    return list(index.get(None, ()))


def _refusal(exc: ApiException) -> str:
    """The apiserver's own words for a refused request (its Status message), with the code."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except ValueError:
        message = None
    return f"{exc.status} {message or exc.reason}"


# -- handlers --------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")  # type: ignore[arg-type]
@metrics.measured("reconcile")
async def reconcile(
    body: kopf.Body,
    reason: kopf.Reason,
    children_by_owner: kopf.Index[Any, Any],
    gpu_nodes: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    view = _view(body)
    try:
        vd = VoiceDeployment.from_object(view, default_images())
    except InvalidSpec as exc:
        problem = str(exc)
        await publisher().publish(
            view, lambda previous: compute_refused_status(view, problem, previous)
        )
        raise kopf.PermanentError(problem) from exc
    meta = vd.metadata
    plan = plan_for(vd.spec, _nodes(gpu_nodes))
    caps = {cap.component: cap.vram_gib for cap in plan.components.values()}
    metrics.observe_vram_caps(meta.namespace, meta.name, caps)
    watched = _children(children_by_owner, meta.namespace, meta.name)
    applied: dict[str, Any] = {}
    failure, retry = None, False
    if plan.fits:
        try:
            applied = await _apply(vd, plan, watched, prune=reason != kopf.Reason.CREATE)
        except ValueError as exc:
            failure = str(exc)
        except ApiException as exc:
            failure, retry = f"the apiserver refused a child: {_refusal(exc)}", True
    await publisher().publish(
        view,
        lambda previous: compute_status(
            vd,
            plan,
            freshest(_children(children_by_owner, meta.namespace, meta.name), applied),
            previous,
            failure,
        ),
    )
    if retry:
        raise kopf.TemporaryError(failure, delay=RETRY_DELAY_S)


@kopf.on.event(  # type: ignore[arg-type]
    "apps", "v1", "deployments", labels=OWNED
)
@metrics.measured("child")
async def child_changed(
    event: kopf.RawEvent,
    namespace: str,
    labels: kopf.Labels,
    voice_deployments: kopf.Index[Any, Any],
    children_by_owner: kopf.Index[Any, Any],
    gpu_nodes: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    owner = labels.get(VD_LABEL)
    view = next(iter(voice_deployments.get((namespace, owner), ())), None)
    if not owner or view is None or view["metadata"].get("deletionTimestamp"):
        return
    try:
        vd = VoiceDeployment.from_object(view, default_images())
    except InvalidSpec:
        return  # the reconcile reported it; nothing here can change that
    plan = plan_for(vd.spec, _nodes(gpu_nodes))
    if event["type"] == "DELETED" and plan.fits:
        log.info("%s/%s lost a child Deployment; applying it again", namespace, owner)
        await _apply(vd, plan, {}, prune=False)
    await publisher().publish(
        view,
        lambda previous: compute_status(
            vd,
            plan,
            _children(children_by_owner, namespace, owner),
            previous,
            reconcile_failure(previous),
        ),
    )


@kopf.on.event(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def voice_deployment_changed(
    event: kopf.RawEvent, uid: str, namespace: str, name: str, **_: Any
) -> None:
    if event["type"] == "DELETED":
        publisher().forget(uid)
        metrics.forget(namespace, name)


# -- autoscaler and metrics ------------------------------------------------------------------


@kopf.on.startup()  # type: ignore[arg-type]
async def start_autoscaler(
    memo: kopf.Memo,
    settings: kopf.OperatorSettings,
    voice_deployments: kopf.Index[Any, Any],
    children_by_owner: kopf.Index[Any, Any],
    runtime_pods: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    # Watch only the runtime pods, server-side (a label filter on the index alone would still
    # stream every pod of the cluster to the operator). Any other pod watch would need its own
    # pods in this selector.
    settings.watching.label_selectors["v1", "pods"] = RUNTIME_POD_SELECTOR
    # The scaler state is not a change of the object: kopf would store its essence again.
    settings.persistence.diffbase_storage.ignored_fields.append(
        ("metadata", "annotations", STATE_ANNOTATION)
    )
    port = int(os.environ.get("PARLEY_OPERATOR_METRICS_PORT", metrics.DEFAULT_PORT))
    memo["metrics_server"] = metrics.serve(port)
    indexes = Indexes(voice_deployments, children_by_owner, runtime_pods)
    memo["autoscaler"] = Autoscaler(indexes, kube, publisher(), _post, runtime_replicas())


@kopf.on.cleanup()
async def stop_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    scaler = memo.get("autoscaler")
    if scaler is not None:
        await scaler.close()
    metrics.stop(memo.get("metrics_server"))


@kopf.on.event(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
async def autoscale(
    event: kopf.RawEvent, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Every VoiceDeployment the operator sees gets its autoscaler loop, until it is deleted."""
    scaler: Autoscaler | None = memo.get("autoscaler")
    if scaler is None:
        return
    if event["type"] == "DELETED":
        scaler.forget((namespace, name))
    else:
        scaler.follow((namespace, name))
