"""The VoiceDeployment spec as frozen pydantic models: the one place its fields are defined.

As in a kubebuilder operator's `*_types.go`, every field carries its validation beside it:
type, default, range, enum, and a description (a model's docstring describes the object). The
CRD's OpenAPI schema is generated from these models (`parley_operator.api.schema`). CEL rules,
which only the apiserver evaluates, sit on the model or field they check, as
`x-kubernetes-validations` in `json_schema_extra`; the two that the pure functions rely on
(llm: an endpoint or a gpu; spec.gpu when a component asks for GPUs) are also model validators.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "parley.dev"
VERSION = "v1alpha1"
KIND = "VoiceDeployment"
PLURAL = "voicedeployments"
SHORT_NAMES = ["vd"]

Schema = dict[str, Any]

COMPONENTS = ("runtime", "llm", "tts")

#: The components whose default image the operator's installation may choose.
OPERATOR_IMAGES = ("runtime", "tts")
DEFAULT_IMAGES = {
    "runtime": "ghcr.io/parley-voice/parley-runtime:0.1.0",
    "llm": "vllm/vllm-openai:v0.11.0",
    "tts": "ghcr.io/parley-voice/parley-tts:0.1.0",
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
POD_MOUNT_PATHS = (
    "/tmp",
    "/var/cache/parley",
    "/var/cache/vllm",
    "/dev/shm",
    "/var/run/secrets/parley",
)
_POD_MOUNT_PATHS_CEL = ", ".join(f"'{p}'" for p in POD_MOUNT_PATHS)
_ABSOLUTE_PATH = "^(/[^/]+)+$"
_DNS_1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Five cron fields or a macro, or empty (the operator's cron parser judges the values).
_CRON_FIELD = "[-0-9A-Za-z*/,?#]+"
MAX_SOAK_HISTORY = 50
_CRON_MACRO = "@(annually|yearly|monthly|weekly|daily|midnight|hourly)"
SOAK_SCHEDULE_PATTERN = f"^({_CRON_MACRO}|{_CRON_FIELD}( +{_CRON_FIELD}){{4}})?$"

#: Messages of the CEL rules that the models mirror.
LLM_ENDPOINT_OR_GPU = (
    "llm: set either endpoint (an external OpenAI-compatible server) or gpu "
    "(a managed vLLM), exactly one"
)
GPU_NEEDED = "components request GPUs: set spec.gpu (memoryGiB per GPU)"


# -- CEL ---------------------------------------------------------------------------------------


def rule(expression: str, message: str, field_path: str | None = None) -> Schema:
    """A CEL validation. Static messages: the apiserver refuses `messageExpression`s that build
    strings from numbers here (their estimated cost is over budget). `field_path` names the
    field an error is reported at (default: the object the rule sits on)."""
    validation: Schema = {"rule": expression, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    return validation


def cel(*rules: Schema) -> Schema:
    """`json_schema_extra` carrying CEL rules into the generated schema."""
    return {"x-kubernetes-validations": list(rules)}


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
    total = " + ".join(_vram(c) for c in COMPONENTS)
    return rule(
        f"!has(self.gpu) || self.gpu.placement != 'shared' || "
        f"{total} <= self.gpu.memoryGiB - self.gpu.headroomGiB",
        "VRAM budget exceeded: in shared placement the runtime, llm and tts gpu.vramGiB must sum "
        "to at most the shared GPU's working cap (gpu.memoryGiB - gpu.headroomGiB)",
    )


def _absolute_path(field: str, description: str, default: str, *rules: Schema) -> Any:
    """A path inside a container: absolute, no trailing slash (CEL, for a readable message)."""
    return Field(
        default,
        max_length=256,
        description=description,
        json_schema_extra=cel(
            rule(
                f"self.matches('{_ABSOLUTE_PATH}')",
                f"{field} must be an absolute path such as {default} (no trailing slash)",
            ),
            *rules,
        ),
    )


# -- the spec ----------------------------------------------------------------------------------


class APIModel(BaseModel):
    """A part of the spec: camelCase keys as in the CRD, immutable, unknown keys refused (the
    apiserver prunes them from what it stores, so one here is a typo in a manifest)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        protected_namespaces=(),
    )


class ComponentGPU(APIModel):
    """GPUs for this component and the GPU memory it may use (its VRAM cap)."""

    count: int = Field(1, ge=1, le=8, description="GPUs requested (nvidia.com/gpu).")
    vram_gib: float = Field(
        alias="vramGiB",
        ge=0,
        description="VRAM cap in GiB; at most the per-GPU working cap (memoryGiB - headroomGiB).",
    )


class EnvVar(APIModel):
    """An environment variable."""

    name: str = Field(description="Name.")
    value: str | None = Field(None, description="Value.")


def _image(component: str) -> Any:
    return Field(DEFAULT_IMAGES[component], description=f"Container image for the {component}.")


def _operator_image(component: str) -> Any:
    """An image the operator's installation chooses when the spec names none: not a schema
    default (the apiserver would store it in every object), but filled in at parse time from
    the `images` of `VoiceDeployment.from_object`, else `DEFAULT_IMAGES`."""
    return Field(
        None,
        validate_default=True,
        description=f"Container image for the {component} (default: the operator's "
        f"PARLEY_OPERATOR_{component.upper()}_IMAGE, else {DEFAULT_IMAGES[component]}).",
    )


def _fill_image(component: str, value: Any, info: ValidationInfo) -> Any:
    if value is not None:
        return value
    images = (info.context or {}).get("images") or {}
    return images.get(component) or DEFAULT_IMAGES[component]


def _resources(component: str) -> Any:
    return Field(
        default_factory=lambda: copy.deepcopy(DEFAULT_RESOURCES[component]),
        description="Kubernetes resource requests and limits (CPU, memory) for the container; "
        "when absent, requests only. nvidia.com/gpu is set from the VRAM plan.",
    )


class ComponentSpec(APIModel):
    """What the runtime, the LLM and the TTS server have in common."""

    image: str
    gpu: ComponentGPU | None = None
    resources: dict[str, Any]
    args: tuple[str, ...] | None = Field(
        None, description="Extra command-line arguments appended to the container's."
    )
    env: tuple[EnvVar, ...] | None = Field(None, description="Extra environment variables.")


class ReplicaBounds(APIModel):
    """Bounds for the runtime's replica count (the autoscaler moves within them)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            rule(
                "self.min <= self.max",
                "runtime.replicas.min must not exceed runtime.replicas.max",
            )
        )
    )

    min: int = Field(1, ge=0, le=1000, description="Fewest replicas.")
    max: int = Field(1, ge=1, le=1000, description="Most replicas.")


class ASRSpec(APIModel):
    """Speech recognition (faster-whisper)."""

    model: str = Field(
        "tiny.en",
        description="tiny.en (packaged) or a CTranslate2 model directory, e.g. under "
        "models.mountPath.",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where ASR runs.")


class RuntimeSpec(ComponentSpec):
    """The voice runtime (parley runtime serve): WebRTC sessions, VAD, ASR, turn-taking."""

    image: str = _operator_image("runtime")
    resources: dict[str, Any] = _resources("runtime")

    @field_validator("image", mode="before")
    @classmethod
    def _default_image(cls, value: Any, info: ValidationInfo) -> Any:
        return _fill_image("runtime", value, info)

    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds)
    sessions_per_pod: int = Field(8, ge=1, le=1000, description="Session cap of each runtime pod.")
    asr: ASRSpec = Field(default_factory=ASRSpec)


class LLMSpec(ComponentSpec):
    """The LLM: a managed vLLM (set gpu) or an external OpenAI-compatible server (set endpoint)."""

    model_config = ConfigDict(
        json_schema_extra=cel(rule("has(self.endpoint) != has(self.gpu)", LLM_ENDPOINT_OR_GPU))
    )

    image: str = _image("llm")
    resources: dict[str, Any] = _resources("llm")
    model: str = Field(
        min_length=1,
        description="Model name (vLLM --model and --served-model-name; the name sent to an "
        "external server). For a managed vLLM a directory under models.mountPath loads local "
        "weights.",
    )
    endpoint: str | None = Field(
        None,
        pattern="^https?://",
        description="Base URL of an external OpenAI-compatible server, e.g. http://llm:8000/v1.",
    )
    max_model_len: int = Field(8192, ge=256, le=1048576, description="vLLM --max-model-len.")
    replicas: int = Field(1, ge=0, le=64, description="vLLM replicas.")

    @model_validator(mode="after")
    def _endpoint_or_gpu(self) -> Self:
        if (self.endpoint is None) == (self.gpu is None):
            raise ValueError(LLM_ENDPOINT_OR_GPU)
        return self

    @property
    def managed(self) -> bool:
        """A vLLM the operator runs (`gpu`), not an external server (`endpoint`)."""
        return self.gpu is not None


class TTSSpec(ComponentSpec):
    """The speech server (parley tts serve)."""

    image: str = _operator_image("tts")

    @field_validator("image", mode="before")
    @classmethod
    def _default_image(cls, value: Any, info: ValidationInfo) -> Any:
        return _fill_image("tts", value, info)

    resources: dict[str, Any] = _resources("tts")
    backend: Literal["piper", "xtts"] = Field("piper", description="piper (CPU) or xtts (GPU).")
    voice: str = Field("en_US-joe-medium", description="Default voice.")
    model_dir: str = _absolute_path(
        "tts.modelDir",
        "XTTS-v2 checkpoint directory (config.json, model.pth, vocab.json, speakers_xtts.pth) "
        "used by the xtts backend: under models.mountPath, or baked into the image.",
        DEFAULT_XTTS_MODEL_DIR,
    )
    replicas: int = Field(1, ge=0, le=64, description="TTS replicas.")


class ModelsVolume(APIModel):
    """Model weights on a PersistentVolumeClaim, mounted into every component's pod (runtime,
    vLLM, TTS). Parley's components never download weights."""

    claim_name: str = Field(
        max_length=253,
        pattern=_DNS_1123_SUBDOMAIN,
        description="The PersistentVolumeClaim holding the weights, in this VoiceDeployment's "
        "namespace.",
    )
    mount_path: str = _absolute_path(
        "models.mountPath",
        "Where the claim is mounted in each container.",
        DEFAULT_MODELS_PATH,
        rule(
            f"![{_POD_MOUNT_PATHS_CEL}].exists(p, p == self || p.startsWith(self + '/'))",
            "models.mountPath must not be, or contain, a path the pods mount already "
            f"({', '.join(POD_MOUNT_PATHS)})",
        ),
    )
    read_only: bool = Field(True, description="Mount the claim read-only.")


class GPUSpec(APIModel):
    """The GPUs of the cluster this deployment runs on, and how components share them."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            rule(
                "self.headroomGiB < self.memoryGiB",
                "gpu.headroomGiB must be less than gpu.memoryGiB",
            )
        )
    )

    memory_gib: float = Field(
        alias="memoryGiB",
        ge=0,
        le=1024,
        description="GPU memory per GPU in GiB (e.g. 80 for an H100 80GB).",
    )
    headroom_gib: float = Field(
        4, alias="headroomGiB", ge=0, description="GPU memory kept free on every GPU."
    )
    placement: Literal["exclusive", "shared"] = Field(
        "exclusive",
        description="exclusive: each component on its own GPU; shared: all on one GPU "
        "(time-slicing or MPS), their caps summing to the working cap.",
    )
    node_selector: dict[str, str] | None = Field(
        None, description="Node labels GPU pods must match."
    )
    tolerations: tuple[dict[str, Any], ...] | None = Field(
        None, description="Tolerations for GPU pods (e.g. nvidia.com/gpu:NoSchedule)."
    )


class SLOSpec(APIModel):
    """Service-level objectives (DESIGN.md latency definitions)."""

    ttfa_p95_ms: int = Field(250, ge=1, le=60000, description="Time to first audio, p95, in ms.")
    barge_in_p95_ms: int = Field(150, ge=1, le=60000, description="Barge-in latency, p95, in ms.")


class ScalingSpec(APIModel):
    """Runtime autoscaling from the SCOS signals the runtime pods report."""

    enabled: bool = Field(True, description="Scale the runtime.")
    interval_seconds: int = Field(
        5,
        ge=1,
        le=300,
        description="How often the operator reads SCOS from the runtime pods and decides.",
    )
    target_utilization: int = Field(
        70, ge=1, le=100, description="Target active/capacity sessions, percent."
    )
    buffer_sessions: int = Field(
        1,
        ge=0,
        le=10000,
        description="Sessions of headroom added to the active ones when sizing the runtime "
        "(with 0 and replicas.min 0 the runtime may scale to zero, and nothing scales it up).",
    )
    tolerance: int = Field(
        10,
        ge=0,
        le=50,
        description="Band around the target utilization, percent, within which the replica "
        "count holds: demand must exceed the current size by more than this to scale up.",
    )
    backpressure_window_seconds: int = Field(
        3,
        ge=0,
        le=600,
        description="How long a pod must stay at ADMISSION_LIMITED or above before it asks for "
        "another replica.",
    )
    scale_up_stabilization_seconds: int = Field(
        30, ge=0, le=3600, description="Least time between two scale-ups."
    )
    scale_down_stabilization_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        description="How long demand must stay below the current size before a pod is drained.",
    )
    drain_timeout_seconds: int = Field(
        600,
        ge=0,
        le=86400,
        description="Most time a draining pod is given to reach 0 sessions before it is removed.",
    )
    scrape_timeout_seconds: int = Field(
        2,
        ge=1,
        le=60,
        description="Timeout of one GET /v1/scos; a failed scrape holds the replica count.",
    )


class SoakSpec(APIModel):
    """Soak tests: `parley soak` run as a Job against the runtime Service, on a cron schedule
    or when the annotation parley.dev/soak-now takes a new value; results land in status."""

    schedule: str = Field(
        "",
        max_length=128,
        description="Cron schedule in UTC (minute hour day-of-month month day-of-week, or a "
        "macro such as @daily); empty runs no scheduled soak.",
        json_schema_extra=cel(
            rule(
                f"self.matches('{SOAK_SCHEDULE_PATTERN}')",
                "soak.schedule must be a cron expression of 5 fields (minute hour day-of-month "
                "month day-of-week) or a macro such as @daily, or empty",
            )
        ),
    )
    sessions: int = Field(4, ge=1, le=10000, description="Concurrent sessions.")
    duration_seconds: int = Field(300, ge=10, le=86400, description="How long each soak runs.")
    duty_cycle: float = Field(
        0.3, ge=0.01, le=1, description="Share of each session's time spent talking."
    )
    max_ttfa_p95_ms: int | None = Field(
        None,
        ge=1,
        le=60000,
        description="Pass criterion: time to first audio, p95, in ms (default: slo.ttfaP95Ms).",
    )
    max_barge_in_p95_ms: int | None = Field(
        None,
        ge=1,
        le=60000,
        description="Pass criterion: barge-in latency, p95, in ms (default: slo.bargeInP95Ms).",
    )
    max_error_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Pass criterion: failed turns and connections over all attempts.",
    )
    history: int = Field(
        5, ge=1, le=MAX_SOAK_HISTORY, description="How many runs status.soak.history keeps."
    )
    ttl_seconds_after_finished: int = Field(
        3600,
        ge=60,
        le=604800,
        description="How long a finished soak Job and its pod are kept (the result is in status "
        "by then).",
    )
    image: str | None = Field(
        None, description="Image with the parley command (default: runtime.image)."
    )
    node_selector: dict[str, str] | None = Field(
        None,
        description="Node labels the soak pod must match: keep the load generator off the "
        "runtime's nodes so that it does not take the CPU it measures.",
    )


class VoiceDeploymentSpec(APIModel):
    """The desired voice deployment."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            rule(
                f"!({' || '.join(f'has(self.{c}.gpu)' for c in COMPONENTS)}) || has(self.gpu)",
                GPU_NEEDED,
            ),
            *[_cap_rule(c) for c in COMPONENTS],
            _shared_rule(),
        )
    )

    gpu: GPUSpec | None = None
    # Validated from {} (not built directly) so that the parse context fills in the image.
    runtime: RuntimeSpec = Field(default_factory=dict, validate_default=True)
    llm: LLMSpec
    tts: TTSSpec = Field(default_factory=dict, validate_default=True)
    models: ModelsVolume | None = None
    slo: SLOSpec = Field(default_factory=SLOSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    soak: SoakSpec = Field(default_factory=SoakSpec)

    @model_validator(mode="after")
    def _gpu_given_when_requested(self) -> Self:
        if self.gpu is None and self.gpu_requests():
            raise ValueError(GPU_NEEDED)
        return self

    def component(self, name: str) -> ComponentSpec:
        """`runtime`, `llm` or `tts`, by name."""
        components: dict[str, ComponentSpec] = {
            "runtime": self.runtime,
            "llm": self.llm,
            "tts": self.tts,
        }
        return components[name]

    def gpu_requests(self) -> dict[str, ComponentGPU]:
        """Component → its GPU request, for the components that ask for GPUs."""
        requests = {name: self.component(name).gpu for name in COMPONENTS}
        return {name: gpu for name, gpu in requests.items() if gpu is not None}


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` as the apiserver stores it: every schema default filled in, absent fields
    absent (for tests and tools that start from a manifest)."""
    parsed = VoiceDeploymentSpec.model_validate(spec)
    stored = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    for component in OPERATOR_IMAGES:  # filled in at parse time, never stored
        if "image" not in (spec.get(component) or {}):
            stored[component].pop("image")
    return stored


# -- the object --------------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The metadata the operator reads (the rest is ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    namespace: str
    uid: str
    generation: int = 0


class InvalidSpec(ValueError):
    """A VoiceDeployment the models refuse: the CRD should have refused it first, so this
    means the stored object and the models disagree (an object stored under an older CRD)."""


class VoiceDeployment(BaseModel):
    """A VoiceDeployment as the pure functions take it: its metadata and typed spec."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    metadata: ObjectMeta
    spec: VoiceDeploymentSpec

    @classmethod
    def from_object(
        cls, obj: Mapping[str, Any], images: Mapping[str, str] | None = None
    ) -> VoiceDeployment:
        """Parse an object from the API (apiVersion, kind and status are ignored); `InvalidSpec`
        names every field refused. `images`: component → the image of a spec naming none
        (the operator's installation's choice; `DEFAULT_IMAGES` otherwise)."""
        try:
            return cls.model_validate(obj, context={"images": dict(images or {})})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise InvalidSpec(f"the VoiceDeployment cannot be read: {problems}") from exc
