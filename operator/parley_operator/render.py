"""Desired state: a VoiceDeployment and its VRAM plan → the Kubernetes objects that run it.

Pure functions in the style of the NVIDIA NIM operator's renderers: no I/O, no clock, plain
dicts out. `render(vd, plan)` returns every child the operator server-side applies, in a stable
order (runtime, llm, tts; Deployment, Service, PodDisruptionBudget), so that applying the same
spec twice changes nothing:

- runtime: Deployment (`parley runtime serve`), Service (8080) and PodDisruptionBudget;
- llm: Deployment (`vllm/vllm-openai`) and Service (8000), only when the LLM is managed
  (`spec.llm.gpu`); an external `spec.llm.endpoint` gets no objects, the runtime points at it;
- tts: Deployment (`parley tts serve`) and Service (8000).

`vd` is the typed object (`parley_operator.api.VoiceDeployment`: metadata name, namespace and
uid; the spec with its defaults). `plan` is `parley_operator.vram.plan_vram(vd.spec)`; it must
fit (the caller reports a plan that does not in the VRAMBudget condition and applies nothing).
Every GPU number (GPUs per pod, VRAM caps, vLLM's `--gpu-memory-utilization`) comes from the
plan, so what runs is what the budget promised.

Choices worth knowing:

- Disruption: the runtime's PodDisruptionBudget is `maxUnavailable: 1`, not a `minAvailable`
  derived from `replicas.min`. It stays right while the autoscaler moves the replica count, lets
  a node drain evict a single-replica deployment instead of blocking it forever (minAvailable 1
  with one replica would), and limits voluntary disruption to one pod, i.e. one pod's sessions,
  at a time. Unhealthy pods are evicted only while the budget allows (`IfHealthyBudget`): a
  runtime pod is unready only while loading or draining, and a draining pod still carries live
  conversations, so "unhealthy" must not mean "free to evict". (A full pod stays ready and
  refuses new sessions itself.)
- Rollouts: CPU-only and exclusive-GPU workloads roll with a surge of one and nothing
  unavailable (capacity is kept; an exclusive surge pod gets its own GPU). GPU workloads in
  `shared` placement use `Recreate`: a second copy on the shared GPU would break its budget.
- Runtime termination: a `preStop` hook runs `parley runtime drain --wait` (an exec, no curl
  in the image), so a rollout, a node drain or a scale-down lets live conversations end before
  the SIGTERM; `terminationGracePeriodSeconds` is the drain timeout plus a margin, and the
  runtime's own SIGTERM drain uses the same timeout.
- Probes: `/healthz` (alive) for liveness and `/readyz` (models loaded, not draining) for
  readiness; vLLM has `/health` for both. Model loading is covered by a startupProbe (runtime
  5 min, TTS 10 min, vLLM 20 min: weights, CUDA graphs, compilation), so liveness can stay strict
  once a process is up and the Deployment's progress deadline outlasts the startup budget.
- Security: non-root (uid 1000), no privilege escalation, all capabilities dropped,
  RuntimeDefault seccomp, no service-account token, no service-link environment variables (a
  Service named `parley-…` would otherwise inject `PARLEY_*` variables the settings read). Root
  filesystems are read-only for the runtime and TTS, with emptyDirs at /tmp and at the cache
  directory (`XDG_CACHE_HOME`).
- Runtime admin token: the runtime's admin requests (drain, listing and ending sessions) need
  a bearer token, which the operator keeps in a Secret `<vd>-runtime-admin` (key `token`),
  created once by the reconcile (`runtime_admin_secret`, given a random token; never applied
  again, so the token stays) and owned by the VoiceDeployment. The runtime pods mount it
  read-only and read it through `PARLEY_ADMIN_TOKENS_FILE` (again when it changes); the
  autoscaler sends it with its drain calls, and the pods' `preStop` drain finds it in its
  environment.
- Model weights: `spec.models` mounts one PersistentVolumeClaim (volume `models`, read-only by
  default) at the same path in every pod, so `runtime.asr.model`, `llm.model` and
  `tts.modelDir` may name directories under it. The TTS server is told `tts.modelDir` only when
  its backend is `xtts`. Nothing here downloads weights.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterable
from typing import Any

from parley_operator.api import (
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    VERSION,
    ComponentSpec,
    EnvVar,
    GPUSpec,
    VoiceDeployment,
    VoiceDeploymentSpec,
)
from parley_operator.vram import ComponentCap, VramPlan

Manifest = dict[str, Any]

MANAGED_BY = "parley-operator"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
VD_LABEL = f"{GROUP}/voicedeployment"
RUNTIME_PORT = 8080
SERVER_PORT = 8000  # TTS and vLLM
GPU_RESOURCE = "nvidia.com/gpu"
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
USER_ID = 1000
CACHE_DIR = "/var/cache/parley"
VLLM_HOME = "/var/cache/vllm"
#: Seconds a container may take to start serving (startupProbe budget).
STARTUP_BUDGET_S = {"runtime": 300, "llm": 1200, "tts": 600}
#: Beyond the drain timeout: the preStop drain returns, then the runtime's own SIGTERM drain
#: finds an empty pod and exits; this covers that and the process's shutdown.
TERMINATION_MARGIN_S = 30
MODELS_VOLUME = "models"
ADMIN_TOKEN_VOLUME = "admin-token"
ADMIN_TOKEN_KEY = "token"
ADMIN_TOKEN_DIR = "/var/run/secrets/parley"
ADMIN_TOKEN_FILE = f"{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_KEY}"
ADMIN_TOKEN_MOUNT = {"name": ADMIN_TOKEN_VOLUME, "mountPath": ADMIN_TOKEN_DIR, "readOnly": True}
_DNS_1035 = re.compile(NAME_PATTERN)


# -- names, labels, ownership ---------------------------------------------------------------


def child_name(vd: VoiceDeployment, component: str) -> str:
    """`<vd>-runtime`, `<vd>-llm`, `<vd>-tts`: the Deployment's and the Service's name."""
    return f"{vd.metadata.name}-{component}"


def service_url(vd: VoiceDeployment, component: str, port: int) -> str:
    return f"http://{child_name(vd, component)}.{vd.metadata.namespace}.svc:{port}/v1"


def selector_labels(vd: VoiceDeployment, component: str) -> dict[str, str]:
    """The stable subset that selects a component's pods (Deployment selectors are immutable)."""
    return {
        "app.kubernetes.io/name": f"parley-{component}",
        "app.kubernetes.io/instance": vd.metadata.name,
    }


def labels(vd: VoiceDeployment, component: str) -> dict[str, str]:
    return {
        **selector_labels(vd, component),
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        VD_LABEL: vd.metadata.name,
    }


def owner_reference(vd: VoiceDeployment) -> Manifest:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": vd.metadata.name,
        "uid": vd.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(vd: VoiceDeployment, component: str) -> Manifest:
    return {
        "name": child_name(vd, component),
        "namespace": vd.metadata.namespace,
        "labels": labels(vd, component),
        "ownerReferences": [owner_reference(vd)],
    }


# -- top level -------------------------------------------------------------------------------


def render(
    vd: VoiceDeployment, plan: VramPlan, *, runtime_replicas: int | None = None
) -> list[Manifest]:
    """Every desired child of `vd`, in a stable order. `runtime_replicas` overrides
    `runtime.replicas.min` (the autoscaler's decision, once there is one)."""
    _check(vd, plan)
    replicas = vd.spec.runtime.replicas.min if runtime_replicas is None else runtime_replicas
    children = [
        runtime_deployment(vd, plan, replicas),
        service(vd, "runtime", RUNTIME_PORT),
        runtime_pdb(vd),
    ]
    if vd.spec.llm.managed:
        children += [llm_deployment(vd, plan), service(vd, "llm", SERVER_PORT)]
    children += [tts_deployment(vd, plan), service(vd, "tts", SERVER_PORT)]
    return children


def _check(vd: VoiceDeployment, plan: VramPlan) -> None:
    name = vd.metadata.name
    if not _DNS_1035.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"VoiceDeployment name {name!r} cannot name its Services: it must be a DNS-1035 "
            f"label (lower-case letters, digits, '-', starting with a letter) of at most "
            f"{MAX_NAME_LENGTH} characters"
        )
    if not plan.fits:
        raise ValueError(f"the VRAM plan does not fit ({plan.reason}): {plan.message}")
    missing = [c for c in vd.spec.gpu_requests() if c not in plan.components]
    if missing:
        raise ValueError(f"the VRAM plan has no cap for {', '.join(missing)}")


# -- runtime ---------------------------------------------------------------------------------


def runtime_deployment(vd: VoiceDeployment, plan: VramPlan, replicas: int) -> Manifest:
    runtime, llm, tts = vd.spec.runtime, vd.spec.llm, vd.spec.tts
    drain_timeout = vd.spec.scaling.drain_timeout_seconds
    # A managed vLLM has no endpoint (the spec has exactly one of the two): its Service.
    llm_url = llm.endpoint or service_url(vd, "llm", SERVER_PORT)
    args = [
        "--host", "0.0.0.0",
        "--port", str(RUNTIME_PORT),
        "--llm-url", llm_url,
        "--llm-model", llm.model,
        "--tts-url", service_url(vd, "tts", SERVER_PORT),
        "--asr-model", runtime.asr.model,
        "--asr-device", runtime.asr.device,
        "--max-sessions", str(runtime.sessions_per_pod),
        "--drain-timeout-s", str(drain_timeout),
    ]  # fmt: skip
    env = {
        # The runtime asks the TTS server for this model and voice (no flags for them).
        "PARLEY_TTS_MODEL": tts.backend,
        "PARLEY_TTS_VOICE": tts.voice,
        "XDG_CACHE_HOME": CACHE_DIR,
        "PARLEY_ADMIN_TOKENS_FILE": ADMIN_TOKEN_FILE,
    }
    container = parley_container(
        vd, "runtime", plan, ["parley", "runtime", "serve"], args, env, RUNTIME_PORT
    )
    container["volumeMounts"].append(ADMIN_TOKEN_MOUNT)
    drain = ["parley", "runtime", "drain", "--url", f"http://127.0.0.1:{RUNTIME_PORT}"]
    container["lifecycle"] = {
        "preStop": {"exec": {"command": [*drain, "--wait", "--timeout-s", str(drain_timeout)]}}
    }
    return deployment(
        vd,
        "runtime",
        plan,
        replicas,
        container,
        [*parley_volumes(vd.spec), admin_token_volume(vd)],
        termination_grace_s=drain_timeout + TERMINATION_MARGIN_S,
    )


def admin_secret_name(vd: VoiceDeployment) -> str:
    return child_name(vd, "runtime-admin")


def admin_token_volume(vd: VoiceDeployment) -> Manifest:
    """The admin token's Secret as a volume (the runtime pods, and the soak Jobs: their load
    comes from one client, which the runtime's rate limit would otherwise hold back)."""
    return {
        "name": ADMIN_TOKEN_VOLUME,
        # Readable by the pod's group only (fsGroup), not by other users of the image.
        "secret": {"secretName": admin_secret_name(vd), "defaultMode": 0o440},
    }


def runtime_admin_secret(vd: VoiceDeployment, token: str) -> Manifest:
    """The Secret holding the runtime's admin token (see the module docstring)."""
    meta = object_meta(vd, "runtime")
    meta["name"] = admin_secret_name(vd)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {ADMIN_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def admin_token_of(secret: Manifest) -> str | None:
    """The token in a stored `runtime_admin_secret`, or None if it holds none."""
    encoded = (secret.get("data") or {}).get(ADMIN_TOKEN_KEY)
    return base64.b64decode(encoded).decode() if encoded else None


def runtime_pdb(vd: VoiceDeployment) -> Manifest:
    """At most one runtime pod voluntarily disrupted at a time (see the module docstring)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(vd, "runtime"),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(vd, "runtime")},
            "unhealthyPodEvictionPolicy": "IfHealthyBudget",
        },
    }


# -- llm (managed vLLM) ----------------------------------------------------------------------


def llm_deployment(vd: VoiceDeployment, plan: VramPlan) -> Manifest:
    llm = vd.spec.llm
    cap = plan.components["llm"]
    args = [
        "--model", llm.model,
        "--served-model-name", llm.model,
        "--max-model-len", str(llm.max_model_len),
        "--gpu-memory-utilization", _number(cap.utilization),
        "--port", str(SERVER_PORT),
    ]  # fmt: skip
    if cap.gpus > 1:
        args += ["--tensor-parallel-size", str(cap.gpus)]
    env = {
        # vLLM and its libraries (Hugging Face, Triton, FlashInfer, torch.compile) cache under
        # $HOME; uid 1000 cannot write the image's /root.
        "HOME": VLLM_HOME,
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    container = {
        "name": "llm",
        "image": llm.image,
        # The image's entrypoint serves the OpenAI API; only arguments are given.
        "args": [*args, *(llm.args or ())],
        "env": merge_env(env, llm.env or ()),
        "ports": [_http_port(SERVER_PORT)],
        "resources": resources(llm, plan.components.get("llm")),
        **probes("llm", "/health", "/health"),
        # Not read-only: vLLM writes compilation and kernel caches (torch.compile, Triton,
        # FlashInfer) at run time, in places not all configurable; $HOME is an emptyDir so
        # that they land on a volume rather than the image layer where possible.
        "securityContext": container_security(read_only_root=False),
        "volumeMounts": [
            {"name": "cache", "mountPath": VLLM_HOME},
            {"name": "dshm", "mountPath": "/dev/shm"},
            *models_mounts(vd.spec),
        ],
    }
    volumes = [
        {"name": "cache", "emptyDir": {}},
        # NCCL and PyTorch share tensors through /dev/shm; the runtime default is 64 MiB.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        *models_volumes(vd.spec),
    ]
    return deployment(vd, "llm", plan, llm.replicas, container, volumes)


# -- tts -------------------------------------------------------------------------------------


def tts_deployment(vd: VoiceDeployment, plan: VramPlan) -> Manifest:
    tts = vd.spec.tts
    cap = plan.components.get("tts")
    args = [
        "--host", "0.0.0.0",
        "--port", str(SERVER_PORT),
        "--default-model", tts.backend,
        "--default-voice", tts.voice,
    ]  # fmt: skip
    env = {"XDG_CACHE_HOME": CACHE_DIR, "PARLEY_TTS_XTTS_DEVICE": "cuda" if cap else "cpu"}
    if tts.backend == "xtts":
        env["PARLEY_TTS_XTTS_MODEL_DIR"] = tts.model_dir
    if cap is not None:
        args += ["--vram-cap-gib", _number(cap.vram_gib)]
        env["PARLEY_VRAM_CAP_GIB"] = _number(cap.vram_gib)
    container = parley_container(
        vd, "tts", plan, ["parley", "tts", "serve"], args, env, SERVER_PORT
    )
    return deployment(vd, "tts", plan, tts.replicas, container, parley_volumes(vd.spec))


# -- building blocks -------------------------------------------------------------------------


def parley_container(
    vd: VoiceDeployment,
    component: str,
    plan: VramPlan,
    command: list[str],
    args: list[str],
    env: dict[str, str],
    port: int,
) -> Manifest:
    """A container of the Parley image: read-only root, /tmp and the cache on emptyDirs, the
    model weights where `spec.models` puts them."""
    spec = vd.spec.component(component)
    return {
        "name": component,
        "image": spec.image,
        "command": command,
        "args": [*args, *(spec.args or ())],
        "env": merge_env(env, spec.env or ()),
        "ports": [_http_port(port)],
        "resources": resources(spec, plan.components.get(component)),
        **probes(component, "/readyz", "/healthz"),
        "securityContext": container_security(read_only_root=True),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": CACHE_DIR},
            *models_mounts(vd.spec),
        ],
    }


def parley_volumes(spec: VoiceDeploymentSpec) -> list[Manifest]:
    return [
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        *models_volumes(spec),
    ]


def models_volumes(spec: VoiceDeploymentSpec) -> list[Manifest]:
    """The `spec.models` claim as the pod's `models` volume; none without `spec.models`."""
    models = spec.models
    if models is None:
        return []
    claim = {"claimName": models.claim_name, "readOnly": models.read_only}
    return [{"name": MODELS_VOLUME, "persistentVolumeClaim": claim}]


def models_mounts(spec: VoiceDeploymentSpec) -> list[Manifest]:
    """The `models` volume at `spec.models.mountPath`; none without `spec.models`."""
    models = spec.models
    if models is None:
        return []
    return [{"name": MODELS_VOLUME, "mountPath": models.mount_path, "readOnly": models.read_only}]


def deployment(
    vd: VoiceDeployment,
    component: str,
    plan: VramPlan,
    replicas: int,
    container: Manifest,
    volumes: list[Manifest],
    *,
    termination_grace_s: int | None = None,
) -> Manifest:
    # The plan has caps only for GPU components, and only when spec.gpu is set.
    gpu = vd.spec.gpu if component in plan.components else None
    shared = gpu is not None and gpu.placement == "shared"
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": volumes,
        **(gpu_scheduling(vd, gpu, plan) if gpu is not None else {}),
    }
    if termination_grace_s is not None:
        pod_spec["terminationGracePeriodSeconds"] = termination_grace_s
    strategy: Manifest = (
        {"type": "Recreate"}
        if shared
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(vd, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(vd, component)},
            "strategy": strategy,
            # Longer than the startup budget: a pod loading a model is progress, not a stall.
            "progressDeadlineSeconds": STARTUP_BUDGET_S[component] + 300,
            "template": {"metadata": {"labels": labels(vd, component)}, "spec": pod_spec},
        },
    }


def service(vd: VoiceDeployment, component: str, port: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(vd, component),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(vd, component),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def gpu_scheduling(vd: VoiceDeployment, gpu: GPUSpec, plan: VramPlan) -> Manifest:
    """Node selector, tolerations and, in `shared` placement, co-location of a GPU pod.

    In `shared` placement the GPU components' caps add up to one GPU's working cap and they
    share it by time-slicing or MPS (the NVIDIA device plugin advertises each GPU as several
    `nvidia.com/gpu`); each caps itself (vLLM `--gpu-memory-utilization`, TTS
    `set_per_process_memory_fraction`). Kubernetes can only co-locate on a node: every GPU pod
    of this VoiceDeployment requires (`requiredDuringSchedulingIgnoredDuringExecution`, topology
    `kubernetes.io/hostname`) a pod of the VoiceDeployment's GPU components on its node. The
    term matches the pod itself, so the first one schedules freely (the scheduler's rule for
    self-matching affinity) and the others follow it. On a node with several GPUs, one shared
    GPU needs the device plugin's sharing configured for that GPU (or a one-GPU node).
    """
    scheduling: Manifest = {}
    if gpu.node_selector:
        scheduling["nodeSelector"] = dict(sorted(gpu.node_selector.items()))
    if gpu.tolerations:
        scheduling["tolerations"] = copy.deepcopy(list(gpu.tolerations))
    if gpu.placement == "shared":
        scheduling["affinity"] = {
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {
                            "matchLabels": {VD_LABEL: vd.metadata.name},
                            "matchExpressions": [
                                {
                                    "key": COMPONENT_LABEL,
                                    "operator": "In",
                                    "values": sorted(plan.components),
                                }
                            ],
                        },
                        "topologyKey": HOSTNAME_TOPOLOGY,
                    }
                ]
            }
        }
    return scheduling


def resources(component_spec: ComponentSpec, cap: ComponentCap | None) -> Manifest:
    """The spec's requests and limits, with `nvidia.com/gpu` set from the plan."""
    merged: Manifest = copy.deepcopy(component_spec.resources)
    if cap is not None:
        merged.setdefault("limits", {})[GPU_RESOURCE] = cap.gpus
        if GPU_RESOURCE in merged.get("requests", {}):
            merged["requests"][GPU_RESOURCE] = cap.gpus  # extended resources: request = limit
    return merged


def merge_env(base: dict[str, str], extra: Iterable[EnvVar]) -> list[Manifest]:
    """`base` overridden by the spec's `env` (by name; the last duplicate wins), sorted."""
    merged: dict[str, Manifest] = {name: {"name": name, "value": v} for name, v in base.items()}
    for item in extra:
        merged[item.name] = item.model_dump(exclude_none=True)
    return [merged[name] for name in sorted(merged)]


def probes(component: str, ready_path: str, live_path: str) -> Manifest:
    period = 10
    return {
        "startupProbe": _http_get(
            live_path, period=period, failures=STARTUP_BUDGET_S[component] // period
        ),
        "readinessProbe": _http_get(ready_path, period=5, failures=2),
        "livenessProbe": _http_get(live_path, period=period, failures=3, timeout=5),
    }


def pod_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(*, read_only_root: bool) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _http_port(port: int) -> Manifest:
    return {"name": "http", "containerPort": port, "protocol": "TCP"}


def _http_get(path: str, *, period: int, failures: int, timeout: int = 2) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _number(value: float) -> str:
    """8.0 → "8", 0.45 → "0.45": what a person would type on the command line."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
