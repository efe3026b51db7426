"""The autoscaler's adapter: per VoiceDeployment, every `scaling.intervalSeconds`, read SCOS
from the runtime pods, call the pure `scaling.decide`, and carry the decision out.

One round, in this order:

1. The runtime pods come from kopf's index (name, pod IP, Ready, terminating, drain mark); the
   ready ones and the draining ones are read concurrently (`scrape.read_all`). A read that
   fails is a missing summary, never an empty pod.
2. `decide` runs under the VoiceDeployment's `RuntimeReplicas` lock, from the freshest view of
   the runtime Deployment's replicas, so a reconcile's apply and the autoscaler's patch never
   interleave or start from a view older than the other's write.
3. Undrain (`DELETE /v1/drain`, drop the pod's marks), drain (`POST /v1/drain`, mark the pod
   `parley.dev/draining-since`; both with the runtime's admin token, read from its Secret when
   there is one to send, so a rotated token is picked up), give the drained pods the lowest
   `controller.kubernetes.io/pod-deletion-cost` (so the ReplicaSet removes exactly them); then
   the scaler state, in the VoiceDeployment's annotation `parley.dev/scaler-state`; and only
   then the runtime Deployment's `spec.replicas` (a merge patch). State before replicas: an
   operator stopped between the two finds a drained pod recorded as removed while the replicas
   still count it, and takes it back (`decide` undrains a pod the ReplicaSet kept); the other
   order could lower the replicas twice for one drain. Anything that fails leaves the state in
   memory as it was, and the next round sees the pods as they are.
4. Metrics, an Event per decision that changes something, and the status (`status.scaling`,
   the printer columns, SignalsAvailable) through the operator's one `StatusPublisher`.

The state lives in memory between rounds and in the annotation across restarts: the first
round after a start reads it back (unreadable: a fresh state, which holds the size and takes
back any drain it finds). It is not kept on the runtime Deployment: every change of a
Deployment's annotations raises its generation (they are copied to its ReplicaSets), which
would look like a rollout each time. While a soak run is going (`status.soak.running`), no
drain starts for low demand: the soak's sessions are what it measures. (A `replicas.max`
lowered by hand still drains at once.)

One loop per VoiceDeployment, as a plain task: a kopf daemon or timer would put a finalizer on
every VoiceDeployment, which must stay deletable while the operator is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import kopf

from parley.scos import Scos
from parley_operator import metrics
from parley_operator.api import GROUP, KIND, VERSION, InvalidSpec, VoiceDeployment
from parley_operator.kube import Kube
from parley_operator.publish import StatusPublisher
from parley_operator.render import (
    COMPONENT_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    admin_secret_name,
    admin_token_of,
    child_name,
)
from parley_operator.scaling import (
    Decision,
    Direction,
    PodSignal,
    ScalerState,
    ScalingPolicy,
    decide,
)
from parley_operator.scrape import Scraped, read_all, set_draining
from parley_operator.settings import default_images
from parley_operator.status import (
    Notice,
    decision_cause,
    decision_notices,
    freshest,
    rollout_view,
    scaling_status,
    timed_out,
    timestamp,
)

Key = tuple[str, str]  # (namespace, VoiceDeployment name)

STATE_ANNOTATION = f"{GROUP}/scaler-state"
DRAINING_ANNOTATION = f"{GROUP}/draining-since"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
LOWEST_DELETION_COST = str(-(2**31))
#: The runtime pods the operator watches (server-side, so it never lists every pod).
RUNTIME_PODS = {COMPONENT_LABEL: "runtime", MANAGED_BY_LABEL: MANAGED_BY}
RUNTIME_POD_SELECTOR = ",".join(f"{k}={v}" for k, v in RUNTIME_PODS.items())
#: Timeout of a drain or undrain call.
DRAIN_CALL_TIMEOUT_S = 5.0
#: A round that failed, or a spec the models refuse, is tried again after this long.
RETRY_S = 10.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimePod:
    """What the operator keeps in memory of a runtime pod (kopf's `runtime_pods` index)."""

    name: str
    ip: str | None
    ready: bool
    terminating: bool  # being deleted, or ended (Succeeded, Failed): not one of the replicas
    draining_since: float | None  # the operator's drain mark

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RuntimePod:
        meta, status = body["metadata"], body.get("status") or {}
        conditions = status.get("conditions") or []
        mark = (meta.get("annotations") or {}).get(DRAINING_ANNOTATION)
        return cls(
            name=meta["name"],
            ip=status.get("podIP") or None,
            ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
            terminating=bool(meta.get("deletionTimestamp"))
            or status.get("phase") in ("Succeeded", "Failed"),
            draining_since=None if mark is None else _parse_time(mark),
        )


def _parse_time(text: str) -> float:
    """A drain mark's time; a mark that is not one still marks (0)."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


class RuntimeReplicas:
    """Turns and the freshest view for the two writers of a runtime Deployment's replicas: the
    reconcile's apply (which keeps them within bounds) and the autoscaler's patch (which moves
    them). The watch lags each write by a round-trip, so each writer starts from the newer of
    the watch's view and the last write's result (by generation: every replicas change raises
    it)."""

    def __init__(self) -> None:
        self._written: dict[Key, dict[str, Any]] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _this_run(self) -> None:
        """A new event loop is a new operator run (tests start several in one process)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._locks, self._written = loop, {}, {}

    def lock(self, key: Key) -> asyncio.Lock:
        self._this_run()
        return self._locks.setdefault(key, asyncio.Lock())

    def freshest(self, key: Key, watched: dict[str, Any] | None) -> dict[str, Any] | None:
        """The runtime Deployment's `rollout_view` to act on (None: it does not exist yet)."""
        self._this_run()
        written = self._written.get(key)
        views = freshest(
            {} if watched is None else {"runtime": watched},
            {} if written is None else {"runtime": written},
        )
        return views.get("runtime")

    def record(self, key: Key, view: dict[str, Any] | None) -> None:
        self._this_run()
        if view is not None:
            self._written[key] = view

    def forget(self, key: Key) -> None:
        self._written.pop(key, None)
        self._locks.pop(key, None)


@dataclass(frozen=True)
class Indexes:
    """kopf's indexes a round reads, by (namespace, name) of the VoiceDeployment."""

    voice_deployments: kopf.Index[Any, Any]
    children_by_owner: kopf.Index[Any, Any]
    runtime_pods: kopf.Index[Any, Any]

    def view(self, key: Key) -> dict[str, Any] | None:
        return next(iter(self.voice_deployments.get(key, ())), None)

    def runtime(self, key: Key) -> dict[str, Any] | None:
        return dict(self.children_by_owner.get(key, ())).get("runtime")

    def pods(self, key: Key) -> list[RuntimePod]:
        """The runtime's pods, less the terminating ones (`decide` wants those)."""
        pods: Iterable[RuntimePod] = self.runtime_pods.get(key, ())
        return sorted((p for p in pods if not p.terminating), key=lambda p: p.name)


@dataclass
class _Memory:
    """What one VoiceDeployment's loop keeps between rounds."""

    state: ScalerState | None = None  # None until read back from the VoiceDeployment
    stored: str | None = None  # the state annotation as last read or written
    last_active: dict[str, int] = field(default_factory=dict)  # pod → sessions at last read

    def restore(self, vd: Mapping[str, Any]) -> None:
        self.state, self.stored = stored_state(vd)

    def expects_scos(self, pod: RuntimePod) -> bool:
        """Whether the pod is to be read: ready, or draining (it stops being ready then)."""
        assert self.state is not None
        return pod.ready or pod.draining_since is not None or pod.name in self.state.draining


def state_text(state: ScalerState) -> str:
    """The state as its annotation holds it."""
    return json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":"))


def stored_state(vd: Mapping[str, Any]) -> tuple[ScalerState, str | None]:
    """The state in the VoiceDeployment's annotation, and the annotation as it is. None or
    unreadable: a fresh state (it holds the size, and takes back any drain it finds)."""
    meta = vd.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(STATE_ANNOTATION)
    if text is None:
        return ScalerState(), None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"not an object: {text[:80]!r}")
        return ScalerState.from_dict(data), text
    except ValueError as exc:
        log.warning(
            "%s/%s: unreadable scaler state, starting afresh: %s",
            meta.get("namespace"),
            meta.get("name"),
            exc,
        )
        return ScalerState(), text


class Autoscaler:
    """The loops of every VoiceDeployment the operator follows."""

    def __init__(
        self,
        indexes: Indexes,
        kube: Callable[[], Kube],
        publisher: StatusPublisher,
        post: Callable[[dict[str, Any], Notice], None],
        replicas: RuntimeReplicas,
    ) -> None:
        self._indexes = indexes
        self._kube = kube
        self._publisher = publisher
        self._post = post
        self._replicas = replicas
        # Pod IPs are reached directly: no proxy from the environment.
        self._http = httpx.AsyncClient(trust_env=False)
        self._loops: dict[Key, asyncio.Task[None]] = {}

    def follow(self, key: Key) -> None:
        """Make sure `key` has its loop (called on every event of the VoiceDeployment)."""
        loop = self._loops.get(key)
        if loop is None or loop.done():
            name = f"autoscale {key[0]}/{key[1]}"
            self._loops[key] = asyncio.create_task(self._loop(key), name=name)

    def forget(self, key: Key) -> None:
        """The VoiceDeployment is gone."""
        loop = self._loops.pop(key, None)
        if loop is not None:
            loop.cancel()
        self._replicas.forget(key)

    async def close(self) -> None:
        loops = list(self._loops.values())
        for loop in loops:
            loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*loops, return_exceptions=True)
        self._loops.clear()
        await self._http.aclose()

    async def _loop(self, key: Key) -> None:
        memory = _Memory()
        while True:
            try:
                with metrics.measuring("scale"):
                    delay = await self._round(key, memory)
            except Exception:  # one failed round must not end the scaling of this object
                log.exception("autoscaler round of %s/%s failed; trying again", *key)
                delay = RETRY_S
            if delay is None:
                return
            await asyncio.sleep(delay)

    async def _round(self, key: Key, memory: _Memory) -> float | None:
        """One round; the seconds until the next, or None when the VoiceDeployment is gone."""
        namespace, name = key
        view = self._indexes.view(key)
        if view is None or view["metadata"].get("deletionTimestamp"):
            return None
        try:
            vd = VoiceDeployment.from_object(view, default_images())
        except InvalidSpec:
            return RETRY_S  # the reconcile reports it
        policy = ScalingPolicy.from_spec(vd.spec)
        if (self._publisher.previous(view).get("soak") or {}).get("running"):
            policy = replace(policy, scale_down_stabilization_s=math.inf)
        if memory.state is None:
            stored = await asyncio.to_thread(
                lambda: self._kube().get(f"{GROUP}/{VERSION}", KIND, namespace, name)
            )
            if stored is None:
                return None
            memory.restore(stored)
        assert memory.state is not None

        pods = self._indexes.pods(key)
        targets = {p.name: p.ip for p in pods if p.ip and memory.expects_scos(p)}
        scraped = await read_all(self._http, targets, policy.scrape_timeout_s)
        signals = [
            PodSignal(p.name, p.ready, _scos(scraped.get(p.name)), p.draining_since) for p in pods
        ]
        async with self._replicas.lock(key):
            runtime = self._replicas.freshest(key, self._indexes.runtime(key))
            if runtime is None:
                return policy.interval_s
            before = int(runtime["spec"]["replicas"])
            now = time.time()
            decision = decide(policy, before, signals, memory.state, now)
            if not await self._act(key, vd, pods, before, decision, memory):
                return policy.interval_s  # an object is gone: nothing done to report

        cause = decision_cause(policy, before, decision, signals)
        metrics.SCALING_DECISIONS.labels(decision.direction.value, cause.value).inc()
        active = {n: s.scos.sessions.active for n, s in scraped.items() if s.scos is not None}
        cut = {n: active.get(n, memory.last_active.get(n, 0)) for n in timed_out(decision, signals)}
        metrics.SESSIONS_CUT.inc(sum(cut.values()))
        memory.last_active = {
            p.name: active.get(p.name, memory.last_active.get(p.name, 0)) for p in pods
        }
        if decision.direction != Direction.HOLD:
            log.info(
                "%s/%s: %s %d → %d (%s): %s",
                *key,
                decision.direction.value,
                before,
                decision.replicas,
                cause.value,
                decision.reason,
            )
        else:
            log.debug("%s/%s: hold at %d: %s", *key, before, decision.reason)
        for notice in decision_notices(before, decision, cause, cut):
            self._post(view, notice)
        failures = {n: s.failure.value for n, s in scraped.items() if s.failure is not None}
        failures |= {p.name: "no pod IP" for p in pods if not p.ip and p.ready}
        await self._publisher.publish(
            view,
            lambda previous: scaling_status(
                previous,
                policy=policy,
                generation=vd.metadata.generation,
                replicas_before=before,
                pods=signals,
                decision=decision,
                cause=cause,
                failures=failures,
                now=now,
            ),
        )
        return policy.interval_s

    async def _act(
        self,
        key: Key,
        vd: VoiceDeployment,
        pods: list[RuntimePod],
        before: int,
        decision: Decision,
        memory: _Memory,
    ) -> bool:
        """Carry `decision` out in the order the module docstring gives; the state in memory
        moves on only once the state and the replicas are written. False when the
        VoiceDeployment or the runtime Deployment is gone (the reconcile applies it again)."""
        namespace, name = key
        deployment = child_name(vd, "runtime")
        ips = {p.name: p.ip for p in pods}
        token = await self._admin_token(vd) if decision.drain or decision.undrain else None
        for pod in decision.undrain:
            if ip := ips.get(pod):
                await set_draining(self._http, ip, False, DRAIN_CALL_TIMEOUT_S, token)
            await self._annotate(
                namespace, pod, {DRAINING_ANNOTATION: None, DELETION_COST_ANNOTATION: None}
            )
        for pod in decision.drain:
            if ip := ips.get(pod):
                await set_draining(self._http, ip, True, DRAIN_CALL_TIMEOUT_S, token)
            since = timestamp(decision.state.draining[pod])
            await self._annotate(namespace, pod, {DRAINING_ANNOTATION: since})
        for pod in decision.drained:
            await self._annotate(namespace, pod, {DELETION_COST_ANNOTATION: LOWEST_DELETION_COST})
        text = state_text(decision.state)
        if text != memory.stored:
            annotation = {"metadata": {"annotations": {STATE_ANNOTATION: text}}}
            written = await asyncio.to_thread(
                lambda: self._kube().merge_patch(
                    f"{GROUP}/{VERSION}", KIND, namespace, name, annotation
                )
            )
            if written is None:
                return False
            memory.stored = text
        if decision.replicas != before:
            replicas = {"spec": {"replicas": decision.replicas}}
            scaled = await asyncio.to_thread(
                lambda: self._kube().merge_patch(
                    "apps/v1", "Deployment", namespace, deployment, replicas
                )
            )
            if scaled is None:
                return False
            self._replicas.record(key, rollout_view(scaled))
        memory.state = decision.state
        return True

    async def _admin_token(self, vd: VoiceDeployment) -> str | None:
        """The runtime's admin token from its Secret; None (logged) when there is none yet: the
        pod refuses the call, and a later round tries again."""
        meta = vd.metadata
        secret = await asyncio.to_thread(
            lambda: self._kube().get("v1", "Secret", meta.namespace, admin_secret_name(vd))
        )
        token = None if secret is None else admin_token_of(secret)
        if token is None:
            log.warning("%s/%s: no runtime admin token to drain with", meta.namespace, meta.name)
        return token

    async def _annotate(self, namespace: str, pod: str, annotations: dict[str, str | None]) -> None:
        """Merge `annotations` into the pod's (None removes one); a pod that is gone is fine."""
        patch = {"metadata": {"annotations": annotations}}
        await asyncio.to_thread(
            lambda: self._kube().merge_patch("v1", "Pod", namespace, pod, patch)
        )


def _scos(scraped: Scraped | None) -> Scos | None:
    return None if scraped is None else scraped.scos
