"""The soak Job of one run, and what the operator keeps of a soak Job it watches. Pure.

The Job runs `parley soak` from the runtime's image (or `soak.image`) against the runtime
Service for `soak.durationSeconds`, with the criteria of `spec.soak` (the latency ones default
to `spec.slo`). The client writes its JSON summary (under 4 KiB) to the termination log, so the
result comes back in the pod's status: no volume, no log scraping, no access to the pod. One
attempt (`backoffLimit: 0`): a soak that failed is a result, not something to retry. The Job
is named after the run's sequence number, so creating it twice is refused by the apiserver
instead of starting a second run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from parley_operator.api import GROUP, VoiceDeployment, VoiceDeploymentSpec
from parley_operator.render import (
    ADMIN_TOKEN_FILE,
    ADMIN_TOKEN_MOUNT,
    CACHE_DIR,
    COMPONENT_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RUNTIME_PORT,
    VD_LABEL,
    admin_token_volume,
    child_name,
    container_security,
    merge_env,
    owner_reference,
    pod_security,
)

Manifest = dict[str, Any]

COMPONENT = "soak"
#: The on-demand trigger: a new value starts one run, named by the value.
SOAK_NOW_ANNOTATION = f"{GROUP}/soak-now"
RUN_ID_ANNOTATION = f"{GROUP}/soak-run-id"
TRIGGER_ANNOTATION = f"{GROUP}/soak-trigger"
RUN_NUMBER_LABEL = f"{GROUP}/soak-run"
ON_DEMAND = "OnDemand"
SCHEDULED = "Scheduled"
CONTAINER = "soak"
TERMINATION_LOG = "/dev/termination-log"
#: Allowed beyond the soak's duration before the Job is stopped: image pull, start, speech
#: synthesis before the clock starts, turns still in flight at the end.
DEADLINE_MARGIN_S = 600
#: The client is CPU-bound (WebRTC and audio for every session); requests only, no limits.
RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}}
#: Job names become the `job-name` label of their pods (at most 63 characters).
MAX_JOB_NAME = 63


@dataclass(frozen=True)
class Run:
    """A run to start: its id (the annotation's value or the scheduled slot), how it was
    triggered, and its sequence number among the VoiceDeployment's runs (names its Job)."""

    run_id: str
    trigger: str
    number: int


@dataclass(frozen=True)
class Criteria:
    """The pass criteria a run is judged by."""

    max_ttfa_p95_ms: int
    max_barge_in_p95_ms: int
    max_error_rate: float


def criteria(spec: VoiceDeploymentSpec) -> Criteria:
    """`spec.soak`'s criteria, the latency ones defaulting to `spec.slo`."""
    soak, slo = spec.soak, spec.slo
    return Criteria(
        max_ttfa_p95_ms=soak.max_ttfa_p95_ms or slo.ttfa_p95_ms,
        max_barge_in_p95_ms=soak.max_barge_in_p95_ms or slo.barge_in_p95_ms,
        max_error_rate=soak.max_error_rate,
    )


def job_name(vd: VoiceDeployment, number: int) -> str:
    """`<vd>-soak-<n>`; a name too long for that is cut and given a hash of itself, so that
    two VoiceDeployments whose names share a long prefix do not share Jobs."""
    suffix = f"-soak-{number}"
    name = vd.metadata.name
    if len(name) + len(suffix) > MAX_JOB_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:6]
        name = f"{name[: MAX_JOB_NAME - len(suffix) - 7]}-{digest}"
    return name + suffix


def soak_labels(vd: VoiceDeployment) -> dict[str, str]:
    """The labels of every soak Job of `vd` and of its pods (what the operator watches)."""
    return {
        "app.kubernetes.io/name": "parley-soak",
        "app.kubernetes.io/instance": vd.metadata.name,
        COMPONENT_LABEL: COMPONENT,
        MANAGED_BY_LABEL: MANAGED_BY,
        VD_LABEL: vd.metadata.name,
    }


def runtime_target(vd: VoiceDeployment) -> str:
    return f"http://{child_name(vd, 'runtime')}.{vd.metadata.namespace}.svc:{RUNTIME_PORT}"


def soak_args(vd: VoiceDeployment) -> list[str]:
    soak, limits = vd.spec.soak, criteria(vd.spec)
    return [
        "--target", runtime_target(vd),
        "--sessions", str(soak.sessions),
        "--duration", f"{soak.duration_seconds}s",
        "--duty-cycle", f"{soak.duty_cycle:g}",
        "--max-ttfa-p95-ms", str(limits.max_ttfa_p95_ms),
        "--max-barge-in-p95-ms", str(limits.max_barge_in_p95_ms),
        "--max-error-rate", f"{limits.max_error_rate:g}",
        "--result-file", TERMINATION_LOG,
        "--token-file", ADMIN_TOKEN_FILE,
    ]  # fmt: skip


def soak_job(vd: VoiceDeployment, run: Run) -> Manifest:
    """The Job of `run`: owned by `vd`, labelled for the operator's watch, with the pods'
    usual security (non-root, read-only root, /tmp and the cache on emptyDirs)."""
    soak = vd.spec.soak
    labels = {**soak_labels(vd), RUN_NUMBER_LABEL: str(run.number)}
    container = {
        "name": CONTAINER,
        "image": soak.image or vd.spec.runtime.image,
        "command": ["parley", "soak"],
        "args": soak_args(vd),
        "env": merge_env({"XDG_CACHE_HOME": CACHE_DIR}, ()),
        "resources": RESOURCES,
        # The summary, or the log's tail when the client died before writing one.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(read_only_root=True),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": CACHE_DIR},
            ADMIN_TOKEN_MOUNT,
        ],
    }
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "cache", "emptyDir": {}},
            admin_token_volume(vd),
        ],
    }
    if soak.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(soak.node_selector.items()))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(vd, run.number),
            "namespace": vd.metadata.namespace,
            "labels": labels,
            "annotations": {RUN_ID_ANNOTATION: run.run_id, TRIGGER_ANNOTATION: run.trigger},
            "ownerReferences": [owner_reference(vd)],
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": soak.ttl_seconds_after_finished,
            "activeDeadlineSeconds": soak.duration_seconds + DEADLINE_MARGIN_S,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def job_view(job: Manifest) -> dict[str, Any]:
    """What the operator keeps of a soak Job in memory: its name and how it ended (`Complete`
    or `Failed`, with the Job controller's reason), `ended` None while it runs."""
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    ended = next(
        (
            {"type": c["type"], "reason": c.get("reason", ""), "message": c.get("message", "")}
            for c in status.get("conditions") or []
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        ),
        None,
    )
    return {"name": meta.get("name", ""), "ended": ended}


def is_job_of(job: Manifest, run: Run) -> bool:
    """Whether an existing Job (one of that name was there already) is `run`'s."""
    meta = job.get("metadata") or {}
    return (meta.get("annotations") or {}).get(RUN_ID_ANNOTATION) == run.run_id and (
        meta.get("labels") or {}
    ).get(RUN_NUMBER_LABEL) == str(run.number)
