"""The kopf adapters of soak tests: thin, around the pure `runs`, `jobs` and `results`.

- Indexes: the `parley.dev/soak-now` annotation of each VoiceDeployment and the soak Jobs by
  owner (name and how each ended), so that deciding costs no API read.
- Three things `drive` a VoiceDeployment: any event of it (the annotation set, the spec
  changed, a status written), any event of one of its soak Jobs (it ended), and a clock every
  `CLOCK_S` seconds (cron slots; a Job that vanished; a step that failed before). Under a lock
  per object, `drive` reads the ended Job's pod (the one API read, once per run), computes the
  next step, creates the Job it asks for, writes the status through the operator's one
  `StatusPublisher`, and posts the step's Events once the status is written.

The clock is one task for the whole operator, not a kopf timer per object: kopf puts a
finalizer on every object that has a timer, and a VoiceDeployment must stay deletable while
the operator is down.

The operator's handlers module imports this one to register it, and its status publisher,
adapter and helpers are used from here at call time (never at import), so the cycle is benign.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from parley_operator import handlers as operator
from parley_operator import metrics
from parley_operator.api import GROUP, PLURAL, VERSION, InvalidSpec, VoiceDeployment
from parley_operator.render import COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, VD_LABEL
from parley_operator.settings import default_images
from parley_operator.soak import runs
from parley_operator.soak.jobs import (
    COMPONENT,
    SOAK_NOW_ANNOTATION,
    Run,
    is_job_of,
    job_view,
    soak_job,
)
from parley_operator.soak.results import soak_status, termination_of

SOAK_JOBS = {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: COMPONENT}
#: How often the clock looks at the VoiceDeployments that have a schedule or a run going.
CLOCK_S = 15
log = logging.getLogger(__name__)
_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


@dataclass(frozen=True)
class Indexes:
    """kopf's indexes that a step reads, by (namespace, name) of the VoiceDeployment."""

    voice_deployments: kopf.Index[Any, Any]
    soak_triggers: kopf.Index[Any, Any]
    soak_jobs: kopf.Index[Any, Any]

    def view(self, key: tuple[str, str]) -> dict[str, Any] | None:
        return next(iter(self.voice_deployments.get(key, ())), None)

    def trigger(self, key: tuple[str, str]) -> str | None:
        return next(iter(self.soak_triggers.get(key, ())), None)

    def jobs(self, key: tuple[str, str]) -> dict[str, dict[str, Any]]:
        return {job["name"]: job for job in self.soak_jobs.get(key, ())}


@kopf.index(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def soak_triggers(
    namespace: str, name: str, annotations: kopf.Annotations, **_: Any
) -> dict[Any, Any] | None:
    value = annotations.get(SOAK_NOW_ANNOTATION)
    return {(namespace, name): value} if value else None


@kopf.index("batch", "v1", "jobs", labels=SOAK_JOBS)  # type: ignore[arg-type]
def soak_jobs(
    body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any
) -> dict[Any, Any] | None:
    owner = labels.get(VD_LABEL)
    return {(namespace, owner): job_view(dict(body))} if owner else None


@kopf.on.event(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
async def drive_on_change(
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    uid: str,
    voice_deployments: kopf.Index[Any, Any],
    soak_triggers: kopf.Index[Any, Any],
    soak_jobs: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    if event["type"] == "DELETED":
        lock = _locks.get(uid)
        if lock is not None and not lock.locked():
            del _locks[uid]
        return
    await drive((namespace, name), Indexes(voice_deployments, soak_triggers, soak_jobs))


@kopf.on.event("batch", "v1", "jobs", labels=SOAK_JOBS)  # type: ignore[arg-type]
async def drive_on_job_change(
    namespace: str,
    labels: kopf.Labels,
    voice_deployments: kopf.Index[Any, Any],
    soak_triggers: kopf.Index[Any, Any],
    soak_jobs: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    owner = labels.get(VD_LABEL)
    if owner:
        await drive((namespace, owner), Indexes(voice_deployments, soak_triggers, soak_jobs))


@kopf.on.startup()  # type: ignore[arg-type]
async def start_soak_clock(
    memo: kopf.Memo,
    voice_deployments: kopf.Index[Any, Any],
    soak_triggers: kopf.Index[Any, Any],
    soak_jobs: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    # A lock binds to the event loop it is first waited on in: each operator run (a process
    # may hold several in turn, as tests do) starts with its own.
    _locks.clear()
    indexes = Indexes(voice_deployments, soak_triggers, soak_jobs)
    memo["soak_clock"] = asyncio.create_task(_clock(indexes), name="soak-clock")


@kopf.on.cleanup()
async def stop_soak_clock(memo: kopf.Memo, **_: Any) -> None:
    clock = memo.get("soak_clock")
    if clock is not None:
        clock.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await clock


async def _clock(indexes: Indexes) -> None:
    while True:
        await asyncio.sleep(CLOCK_S)
        for key in list(indexes.voice_deployments):
            view = indexes.view(key)
            if view is None or not runs.wants_clock(view, indexes.trigger(key)):
                continue
            try:
                await drive(key, indexes)
            except Exception:  # one object's trouble must not stop the clock for the others
                log.exception("soak step of %s/%s failed; retried on the next tick", *key)


async def drive(key: tuple[str, str], indexes: Indexes) -> None:
    """Take the soak of the VoiceDeployment `key` (namespace, name) one step (see the module
    docstring)."""
    namespace = key[0]
    view = indexes.view(key)
    if view is None or view["metadata"].get("deletionTimestamp"):
        return
    try:
        vd = VoiceDeployment.from_object(view, default_images())
    except InvalidSpec:
        return  # the reconcile reports it
    async with _locks[vd.metadata.uid]:
        publisher = operator.publisher()
        previous = publisher.previous(view)
        state = previous.get("soak") or {}
        job = indexes.jobs(key).get(runs.running_job_name(state) or "")
        terminated = None
        if job is not None and job["ended"] is not None:
            selector = f"batch.kubernetes.io/job-name={job['name']}"
            pods = await asyncio.to_thread(
                lambda: operator.kube().objects("v1", "Pod", namespace, selector)
            )
            terminated = termination_of(pods)
        now = datetime.datetime.now(datetime.UTC)
        step = runs.advance(
            vd,
            state,
            trigger=indexes.trigger(key),
            runtime_ready=int((previous.get("runtime") or {}).get("ready") or 0) > 0,
            job=job,
            terminated=terminated,
            now=now,
        )
        if step.start is not None:
            step = await _start(vd, step.start, step, now)
        history = step.state.get("history") or []
        if history:
            metrics.observe_soak(namespace, vd.metadata.name, bool(history[0].get("passed")))
        written = await publisher.publish(view, lambda before: soak_status(before, step.state, now))
    if written:
        for notice in step.notices:
            operator._post(view, notice)


async def _start(
    vd: VoiceDeployment, run: Run, step: runs.Step, now: datetime.datetime
) -> runs.Step:
    """Create `run`'s Job (`step` starts it); a Job the apiserver refuses is the run's result."""
    manifest = soak_job(vd, run)
    try:
        stored = await asyncio.to_thread(lambda: operator.kube().create(manifest))
    except ApiException as exc:
        problem = f"the apiserver refused the Job: {operator._refusal(exc)}"
        return runs.start_failed(vd, step, problem, now)
    if not is_job_of(stored, run):
        problem = f"a Job named {manifest['metadata']['name']} exists already for another run"
        return runs.start_failed(vd, step, problem, now)
    return step
