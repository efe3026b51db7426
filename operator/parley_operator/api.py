"""The VoiceDeployment API (`parley.dev/v1alpha1`): its OpenAPI schema, defaults and CEL rules.

This module is the one source of truth for the custom resource. `crd()` builds the
CustomResourceDefinition; `crds/voicedeployment.yaml` is its rendered copy (`parley operator
crd > crds/voicedeployment.yaml`), kept in sync by a test. Validation lives in the apiserver:
OpenAPI types, ranges and defaults, and CEL rules whose messages name the broken budget.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

GROUP = "parley.dev"
VERSION = "v1alpha1"
KIND = "VoiceDeployment"
PLURAL = "voicedeployments"
SHORT_NAMES = ["vd"]

Schema = dict[str, Any]

DEFAULT_IMAGES = {
    "runtime": "ghcr.io/parley-voice/parley:0.1.0",
    "llm": "vllm/vllm-openai:v0.11.0",
    "tts": "ghcr.io/parley-voice/parley:0.1.0",
}

#: Requests a component's container gets when its spec sets no `resources` (no limits: the
#: GPU limit comes from the VRAM plan).
DEFAULT_RESOURCES = {
    "runtime": {"requests": {"cpu": "1", "memory": "1Gi"}},
    "llm": {"requests": {"cpu": "2", "memory": "16Gi"}},
    "tts": {"requests": {"cpu": "1", "memory": "1Gi"}},
}

#: Children are named `<name>-runtime` (the longest), `<name>-llm`, `<name>-tts`, and a
#: Service's name must be a DNS-1035 label of at most 63 characters.
MAX_NAME_LENGTH = 63 - len("-runtime")
NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"

DEFAULT_MODELS_PATH = "/models"
DEFAULT_XTTS_MODEL_DIR = f"{DEFAULT_MODELS_PATH}/xtts-v2"
#: Where the pods mount their own volumes (render.py); `spec.models` stays clear of them.
POD_MOUNT_PATHS = ("/tmp", "/var/cache/parley", "/var/cache/vllm", "/dev/shm")
_ABSOLUTE_PATH = "^(/[^/]+)+$"
_DNS_1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


# -- schema helpers -------------------------------------------------------------------------


def obj(
    description: str,
    properties: Schema,
    required: list[str] | None = None,
    *,
    validations: list[Schema] | None = None,
    preserve_unknown: bool = False,
    **extra: Any,
) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = required
    if validations:
        schema["x-kubernetes-validations"] = validations
    if preserve_unknown:
        schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema | extra


def string(description: str, *, validations: list[Schema] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", "description": description, **extra}
    if validations:
        schema["x-kubernetes-validations"] = validations
    return schema


def absolute_path(field: str, description: str, default: str, *rules: Schema) -> Schema:
    """A path inside a container: absolute, no trailing slash (CEL, for a readable message)."""
    return string(
        description,
        maxLength=256,
        default=default,
        validations=[
            rule(
                f"self.matches('{_ABSOLUTE_PATH}')",
                f"{field} must be an absolute path such as {default} (no trailing slash)",
            ),
            *rules,
        ],
    )


def integer(
    description: str, minimum: int | None = None, maximum: int | None = None, **extra: Any
) -> Schema:
    schema: Schema = {"type": "integer", "description": description, **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def gib(description: str, **extra: Any) -> Schema:
    return {"type": "number", "description": description, "minimum": 0, **extra}


def string_map(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {"type": "string"},
    }


def rule(expression: str, message: str, field_path: str | None = None) -> Schema:
    """A CEL validation. Static messages: the apiserver refuses `messageExpression`s that build
    strings from numbers here (their estimated cost is over budget). `field_path` names the
    field an error is reported at (default: the object the rule sits on)."""
    validation: Schema = {"rule": expression, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    return validation


# -- the spec -------------------------------------------------------------------------------


def component_gpu() -> Schema:
    return obj(
        "GPUs for this component and the GPU memory it may use (its VRAM cap).",
        {
            "count": integer("GPUs requested (nvidia.com/gpu).", 1, 8, default=1),
            "vramGiB": gib(
                "VRAM cap in GiB; at most the per-GPU working cap (memoryGiB - headroomGiB)."
            ),
        },
        required=["vramGiB"],
    )


def common_fields(component: str) -> Schema:
    return {
        "image": string(f"Container image for the {component}.", default=DEFAULT_IMAGES[component]),
        "gpu": component_gpu(),
        "resources": obj(
            "Kubernetes resource requests and limits (CPU, memory) for the container; when "
            "absent, requests only. nvidia.com/gpu is set from the VRAM plan.",
            {},
            preserve_unknown=True,
            default=copy.deepcopy(DEFAULT_RESOURCES[component]),
        ),
        "args": {
            "type": "array",
            "description": "Extra command-line arguments appended to the container's.",
            "items": {"type": "string"},
        },
        "env": {
            "type": "array",
            "description": "Extra environment variables.",
            "items": obj(
                "An environment variable.",
                {"name": string("Name."), "value": string("Value.")},
                required=["name"],
            ),
        },
    }


def runtime_schema() -> Schema:
    return obj(
        "The voice runtime (parley runtime serve): WebRTC sessions, VAD, ASR, turn-taking.",
        {
            **common_fields("runtime"),
            "replicas": obj(
                "Bounds for the runtime's replica count (the autoscaler moves within them).",
                {
                    "min": integer("Fewest replicas.", 0, 1000, default=1),
                    "max": integer("Most replicas.", 1, 1000, default=1),
                },
                default={"min": 1, "max": 1},
                validations=[
                    rule(
                        "self.min <= self.max",
                        "runtime.replicas.min must not exceed runtime.replicas.max",
                    )
                ],
            ),
            "sessionsPerPod": integer("Session cap of each runtime pod.", 1, 1000, default=8),
            "asr": obj(
                "Speech recognition (faster-whisper).",
                {
                    "model": string(
                        "tiny.en (packaged) or a CTranslate2 model directory, e.g. under "
                        "models.mountPath.",
                        default="tiny.en",
                    ),
                    "device": string("Where ASR runs.", enum=["cpu", "cuda"], default="cpu"),
                },
                default={},
            ),
        },
        default={},
    )


def llm_schema() -> Schema:
    return obj(
        "The LLM: a managed vLLM (set gpu) or an external OpenAI-compatible server (set endpoint).",
        {
            **common_fields("llm"),
            "model": string(
                "Model name (vLLM --model and --served-model-name; the name sent to an external "
                "server). For a managed vLLM a directory under models.mountPath loads local "
                "weights.",
                minLength=1,
            ),
            "endpoint": string(
                "Base URL of an external OpenAI-compatible server, e.g. http://llm:8000/v1.",
                pattern="^https?://",
            ),
            "maxModelLen": integer("vLLM --max-model-len.", 256, 1048576, default=8192),
            "replicas": integer("vLLM replicas.", 0, 64, default=1),
        },
        required=["model"],
        validations=[
            rule(
                "has(self.endpoint) != has(self.gpu)",
                "llm: set either endpoint (an external OpenAI-compatible server) or gpu "
                "(a managed vLLM), exactly one",
            )
        ],
    )


def tts_schema() -> Schema:
    return obj(
        "The speech server (parley tts serve).",
        {
            **common_fields("tts"),
            "backend": string(
                "piper (CPU) or xtts (GPU).", enum=["piper", "xtts"], default="piper"
            ),
            "voice": string("Default voice.", default="en_US-joe-medium"),
            "modelDir": absolute_path(
                "tts.modelDir",
                "XTTS-v2 checkpoint directory (config.json, model.pth, vocab.json, "
                "speakers_xtts.pth) used by the xtts backend: under models.mountPath, or baked "
                "into the image.",
                DEFAULT_XTTS_MODEL_DIR,
            ),
            "replicas": integer("TTS replicas.", 0, 64, default=1),
        },
        default={},
    )


def models_schema() -> Schema:
    taken = ", ".join(POD_MOUNT_PATHS)
    listed = ", ".join(f"'{p}'" for p in POD_MOUNT_PATHS)
    return obj(
        "Model weights on a PersistentVolumeClaim, mounted into every component's pod "
        "(runtime, vLLM, TTS). Parley's components never download weights.",
        {
            "claimName": string(
                "The PersistentVolumeClaim holding the weights, in this VoiceDeployment's "
                "namespace.",
                maxLength=253,
                pattern=_DNS_1123_SUBDOMAIN,
            ),
            "mountPath": absolute_path(
                "models.mountPath",
                "Where the claim is mounted in each container.",
                DEFAULT_MODELS_PATH,
                rule(
                    f"![{listed}].exists(p, p == self || p.startsWith(self + '/'))",
                    f"models.mountPath must not be, or contain, a path the pods mount already "
                    f"({taken})",
                ),
            ),
            "readOnly": {
                "type": "boolean",
                "description": "Mount the claim read-only.",
                "default": True,
            },
        },
        required=["claimName"],
    )


_COMPONENTS = ("runtime", "llm", "tts")


def _vram(component: str) -> str:
    return f"(has(self.{component}.gpu) ? self.{component}.gpu.vramGiB : 0.0)"


def _cap_rule(component: str) -> Schema:
    return rule(
        f"!has(self.{component}.gpu) || !has(self.gpu) || "
        f"self.{component}.gpu.vramGiB <= self.gpu.memoryGiB - self.gpu.headroomGiB",
        f"VRAM budget: {component}.gpu.vramGiB exceeds the per-GPU working cap "
        "(gpu.memoryGiB - gpu.headroomGiB)",
    )


def _shared_rule() -> Schema:
    total = " + ".join(_vram(c) for c in _COMPONENTS)
    return rule(
        f"!has(self.gpu) || self.gpu.placement != 'shared' || "
        f"{total} <= self.gpu.memoryGiB - self.gpu.headroomGiB",
        "VRAM budget exceeded: in shared placement the runtime, llm and tts gpu.vramGiB must sum "
        "to at most the shared GPU's working cap (gpu.memoryGiB - gpu.headroomGiB)",
    )


def spec_schema() -> Schema:
    gpu_requested = " || ".join(f"has(self.{c}.gpu)" for c in _COMPONENTS)
    return obj(
        "The desired voice deployment.",
        {
            "gpu": obj(
                "The GPUs of the cluster this deployment runs on, and how components share them.",
                {
                    "memoryGiB": gib(
                        "GPU memory per GPU in GiB (e.g. 80 for an H100 80GB).", maximum=1024
                    ),
                    "headroomGiB": gib("GPU memory kept free on every GPU.", default=4),
                    "placement": string(
                        "exclusive: each component on its own GPU; shared: all on one GPU "
                        "(time-slicing or MPS), their caps summing to the working cap.",
                        enum=["exclusive", "shared"],
                        default="exclusive",
                    ),
                    "nodeSelector": string_map("Node labels GPU pods must match."),
                    "tolerations": {
                        "type": "array",
                        "description": "Tolerations for GPU pods (e.g. nvidia.com/gpu:NoSchedule).",
                        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                },
                required=["memoryGiB"],
                validations=[
                    rule(
                        "self.headroomGiB < self.memoryGiB",
                        "gpu.headroomGiB must be less than gpu.memoryGiB",
                    )
                ],
            ),
            "runtime": runtime_schema(),
            "llm": llm_schema(),
            "tts": tts_schema(),
            "models": models_schema(),
            "slo": obj(
                "Service-level objectives (DESIGN.md latency definitions).",
                {
                    "ttfaP95Ms": integer("Time to first audio, p95, in ms.", 1, 60000, default=250),
                    "bargeInP95Ms": integer("Barge-in latency, p95, in ms.", 1, 60000, default=150),
                },
                default={},
            ),
            "scaling": obj(
                "Runtime autoscaling from the SCOS signals the runtime pods report.",
                {
                    "enabled": {
                        "type": "boolean",
                        "description": "Scale the runtime.",
                        "default": True,
                    },
                    "targetUtilization": integer(
                        "Target active/capacity sessions, percent.", 1, 100, default=70
                    ),
                    "scaleUpStabilizationSeconds": integer(
                        "Wait before scaling up again.", 0, 3600, default=30
                    ),
                    "scaleDownStabilizationSeconds": integer(
                        "Wait before scaling down.", 0, 86400, default=300
                    ),
                    "drainTimeoutSeconds": integer(
                        "Most time a draining pod is given.", 0, 86400, default=600
                    ),
                },
                default={},
            ),
            "soak": obj(
                "Soak tests run as Jobs; their results land in status.",
                {
                    "schedule": string("Cron schedule; empty runs no scheduled soak.", default=""),
                    "sessions": integer("Concurrent sessions.", 1, 10000, default=4),
                    "durationSeconds": integer("How long each soak runs.", 10, 86400, default=300),
                },
                default={},
            ),
        },
        required=["llm"],
        validations=[
            rule(
                f"!({gpu_requested}) || has(self.gpu)",
                "components request GPUs: set spec.gpu (memoryGiB per GPU)",
            ),
            *[_cap_rule(c) for c in _COMPONENTS],
            _shared_rule(),
        ],
    )


def status_schema() -> Schema:
    replicas = obj(
        "Replica counts of one component.",
        {"desired": integer("Desired replicas."), "ready": integer("Ready replicas.")},
    )
    return obj(
        "Observed state, written by the operator.",
        {
            "observedGeneration": integer("The generation this status describes."),
            "conditions": {
                "type": "array",
                "description": "Ready, Progressing, Degraded, VRAMBudget, SoakPassing.",
                "items": obj(
                    "A standard condition.",
                    {
                        "type": string("Condition type."),
                        "status": string(
                            "True, False or Unknown.", enum=["True", "False", "Unknown"]
                        ),
                        "reason": string("Machine-readable reason (one catalogue)."),
                        "message": string("Human-readable detail."),
                        "lastTransitionTime": string(
                            "When status last changed.", format="date-time"
                        ),
                        "observedGeneration": integer("Generation it was set for."),
                    },
                    required=["type", "status"],
                ),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "runtime": replicas,
            "llm": replicas,
            "tts": replicas,
            "runtimeReplicas": string("Runtime ready/desired, for kubectl get."),
            "sessions": integer("Active sessions across runtime pods."),
            "backpressure": string("Highest backpressure level reported by the runtime pods."),
            "vramPlan": {
                "type": "array",
                "description": "Per-GPU placement and caps computed by the VRAM planner.",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
            "soak": {
                "type": "object",
                "description": "The last soak test's result.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    )


def name_rules() -> list[Schema]:
    """The name must name the children's Services (`<name>-runtime`: a DNS-1035 label)."""
    return [
        rule(
            f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters: the children's "
            f"Services are named <name>-runtime, <name>-llm and <name>-tts (at most 63)",
            ".metadata",
        ),
        rule(
            f"self.metadata.name.matches('{NAME_PATTERN}')",
            "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit): it names Services",
            ".metadata",
        ),
    ]


def crd() -> Schema:
    """The CustomResourceDefinition, as a plain dict ready for YAML or the API."""
    ready = '.status.conditions[?(@.type=="Ready")].status'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "voicedeployment",
                "kind": KIND,
                "listKind": f"{KIND}List",
                "shortNames": SHORT_NAMES,
                "categories": ["parley"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "string", "jsonPath": ready},
                        {
                            "name": "Runtime",
                            "type": "string",
                            "jsonPath": ".status.runtimeReplicas",
                            "description": "Runtime ready/desired replicas.",
                        },
                        {"name": "Sessions", "type": "integer", "jsonPath": ".status.sessions"},
                        {
                            "name": "Backpressure",
                            "type": "string",
                            "jsonPath": ".status.backpressure",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": obj(
                            "A realtime voice agent: runtime, LLM and TTS workloads on GPUs.",
                            {
                                "apiVersion": string("API version."),
                                "kind": string("Kind."),
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            required=["spec"],
                            validations=name_rules(),
                        )
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = (
        "# Generated from operator/parley_operator/api.py by `parley operator crd`; do not edit.\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
