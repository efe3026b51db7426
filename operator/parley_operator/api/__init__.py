"""The VoiceDeployment API (`parley.dev/v1alpha1`): the one source of truth for the resource.

`types` defines the spec as frozen pydantic models, each field with its default, range, enum
and description, and each model with its CEL rules; `schema` generates the CRD from them.
`crds/voicedeployment.yaml` is the rendered copy (`parley operator crd >
crds/voicedeployment.yaml`), kept in sync by a test. The apiserver validates with the CRD; the
operator parses what it stored into the models once, at the edge (`VoiceDeployment.from_object`),
and its pure functions take the models.
"""

from parley_operator.api.schema import crd, crd_yaml, openapi_schema
from parley_operator.api.types import (
    COMPONENTS,
    DEFAULT_IMAGES,
    DEFAULT_RESOURCES,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    PLURAL,
    POD_MOUNT_PATHS,
    SHORT_NAMES,
    VERSION,
    ASRSpec,
    ComponentGPU,
    ComponentSpec,
    EnvVar,
    GPUSpec,
    InvalidSpec,
    LLMSpec,
    ModelsVolume,
    ObjectMeta,
    ReplicaBounds,
    RuntimeSpec,
    ScalingSpec,
    SLOSpec,
    SoakSpec,
    TTSSpec,
    VoiceDeployment,
    VoiceDeploymentSpec,
    with_defaults,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_IMAGES",
    "DEFAULT_RESOURCES",
    "GROUP",
    "KIND",
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "PLURAL",
    "POD_MOUNT_PATHS",
    "SHORT_NAMES",
    "VERSION",
    "ASRSpec",
    "ComponentGPU",
    "ComponentSpec",
    "EnvVar",
    "GPUSpec",
    "InvalidSpec",
    "LLMSpec",
    "ModelsVolume",
    "ObjectMeta",
    "ReplicaBounds",
    "RuntimeSpec",
    "SLOSpec",
    "ScalingSpec",
    "SoakSpec",
    "TTSSpec",
    "VoiceDeployment",
    "VoiceDeploymentSpec",
    "crd",
    "crd_yaml",
    "openapi_schema",
    "with_defaults",
]
