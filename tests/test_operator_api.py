"""The typed API: the models read every example, refuse the mistakes they can see by name, fill
in the CRD's defaults, and the CRD generated from them says what pydantic says about them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from parley_operator.api import (
    DEFAULT_IMAGES,
    DEFAULT_RESOURCES,
    InvalidSpec,
    VoiceDeployment,
    VoiceDeploymentSpec,
    crd,
    with_defaults,
)
from parley_operator.api.types import GPU_NEEDED, LLM_ENDPOINT_OR_GPU
from parley_operator.conditions import Reason
from parley_operator.vram import plan_vram

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ALL = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
MINIMAL = {"llm": {"endpoint": "http://llm:8000/v1", "model": "m"}}

Schema = dict[str, Any]


def spec_of(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())["spec"]
    return spec


def crd_spec_schema() -> Schema:
    schema: Schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]


# -- what the models accept and refuse ---------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_example_is_read(name: str) -> None:
    spec = VoiceDeploymentSpec.model_validate(spec_of(name))
    assert spec.llm.model
    manifest = yaml.safe_load((EXAMPLES / name).read_text())
    manifest["metadata"] |= {"namespace": "ns", "uid": "u"}
    assert VoiceDeployment.from_object(manifest).spec == spec


def test_fields_read_by_their_python_names() -> None:
    spec = VoiceDeploymentSpec.model_validate(spec_of("gpu-exclusive-with-models.yaml"))
    assert spec.runtime.sessions_per_pod == 40
    assert spec.runtime.replicas.min == 2 and spec.runtime.replicas.max == 8
    assert spec.gpu is not None and spec.gpu.memory_gib == 80 and spec.gpu.headroom_gib == 4
    assert spec.gpu_requests()["llm"].vram_gib == 36
    assert spec.models is not None and spec.models.mount_path == "/models"
    assert spec.llm.managed and spec.llm.env is not None and spec.llm.env[0].value == "1"
    assert spec.tts.model_dir == "/models/xtts-v2"


def test_the_models_are_frozen() -> None:
    spec = VoiceDeploymentSpec.model_validate(MINIMAL)
    with pytest.raises(ValidationError, match="frozen"):
        spec.runtime.sessions_per_pod = 9  # type: ignore[misc]


def changed(name: str, change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec_of(name))
    change(spec)
    return spec


#: Mistakes the models can see (the CRD refuses them too), and what the refusal names.
REFUSED = {
    "an unknown placement": (
        changed("gpu-shared.yaml", lambda s: s["gpu"].update(placement="packed")),
        "gpu.placement",
    ),
    "a negative replica count": (
        changed("cpu.yaml", lambda s: s["runtime"]["replicas"].update(min=-1)),
        "runtime.replicas.min",
    ),
    "more GPUs than a pod may ask for": (
        changed("gpu-exclusive.yaml", lambda s: s["llm"]["gpu"].update(count=9)),
        "llm.gpu.count",
    ),
    "a context shorter than vLLM's minimum": (
        changed("gpu-exclusive.yaml", lambda s: s["llm"].update(maxModelLen=1)),
        "llm.maxModelLen",
    ),
    "an ASR device that does not exist": (
        changed("cpu.yaml", lambda s: s["runtime"]["asr"].update(device="tpu")),
        "runtime.asr.device",
    ),
    "an endpoint that is no URL": (
        changed("cpu.yaml", lambda s: s["llm"].update(endpoint="llm:8000")),
        "llm.endpoint",
    ),
    "GPU memory without a number": (
        changed("gpu-shared.yaml", lambda s: s["gpu"].pop("memoryGiB")),
        "gpu.memoryGiB",
    ),
    "models without a claim": (
        changed("cpu.yaml", lambda s: s.update(models={"mountPath": "/models"})),
        "models.claimName",
    ),
    "a claim name that is no object name": (
        changed("cpu.yaml", lambda s: s.update(models={"claimName": "Voice_Models"})),
        "models.claimName",
    ),
    "no llm": (changed("cpu.yaml", lambda s: s.pop("llm")), "llm"),
    "both an endpoint and a managed vLLM": (
        changed("gpu-exclusive.yaml", lambda s: s["llm"].update(endpoint="http://x:8000/v1")),
        LLM_ENDPOINT_OR_GPU,
    ),
    "neither an endpoint nor a managed vLLM": (
        changed("cpu.yaml", lambda s: s["llm"].pop("endpoint")),
        LLM_ENDPOINT_OR_GPU,
    ),
    "GPU components without spec.gpu": (
        changed("gpu-shared.yaml", lambda s: s.pop("gpu")),
        GPU_NEEDED,
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_mistakes_are_refused_by_name(case: str) -> None:
    spec, named = REFUSED[case]
    with pytest.raises(ValidationError) as refused:
        VoiceDeploymentSpec.model_validate(spec)
    where = [".".join(str(part) for part in error["loc"]) for error in refused.value.errors()]
    assert named in where or named in str(refused.value), where


@pytest.mark.parametrize(
    ("change", "typo"),
    [
        (lambda s: s["llm"].update(modle="x"), "llm.modle"),
        (lambda s: s["runtime"].update(sessionPerPod=4), "runtime.sessionPerPod"),
        (lambda s: s.update(scalling={"enabled": False}), "scalling"),
        (lambda s: s["runtime"]["replicas"].update(maximum=3), "runtime.replicas.maximum"),
    ],
)
def test_a_typo_is_refused_with_its_name(
    change: Callable[[dict[str, Any]], Any], typo: str
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "cpu.yaml").read_text())
    change(manifest["spec"])
    manifest["metadata"] |= {"namespace": "ns", "uid": "u"}
    with pytest.raises(InvalidSpec) as refused:
        VoiceDeployment.from_object(manifest)
    assert f"spec.{typo}: Extra inputs are not permitted" in str(refused.value)


def test_the_budget_is_the_planners_to_judge() -> None:
    """examples/invalid/too-big.yaml breaks a CEL rule only: the models read it, so that the
    planner can report the arithmetic (should a stored object ever get past the apiserver)."""
    too_big = yaml.safe_load((EXAMPLES / "invalid" / "too-big.yaml").read_text())["spec"]
    plan = plan_vram(VoiceDeploymentSpec.model_validate(too_big))
    assert not plan.fits and plan.reason == Reason.SHARED_GPU_OVERCOMMITTED


# -- defaults ----------------------------------------------------------------------------------


def apiserver_defaults(schema: Schema, value: Any) -> Any:
    """Structural-schema defaulting as the apiserver does it: a missing field with a default
    gets it, and the value (defaulted or given) is defaulted in turn."""
    if schema.get("type") == "object" and isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apiserver_defaults(child, value[name])
    elif schema.get("type") == "array" and isinstance(value, list):
        return [apiserver_defaults(schema["items"], item) for item in value]
    return value


@pytest.mark.parametrize("name", [*ALL, "minimal"])
def test_the_models_defaults_are_the_crds(name: str) -> None:
    spec = copy.deepcopy(MINIMAL) if name == "minimal" else spec_of(name)
    assert with_defaults(spec) == apiserver_defaults(crd_spec_schema(), copy.deepcopy(spec))


def test_defaults_under_cel_rules_are_written_out_whole() -> None:
    """The apiserver checks a default against its object's CEL rules as it stands, without the
    defaults inside it (`{}` for runtime.replicas would fail `self.min <= self.max`)."""

    def ruled(schema: Schema) -> list[Schema]:
        found = (
            [schema] if {"default", "x-kubernetes-validations", "properties"} <= set(schema) else []
        )
        children = [*schema.get("properties", {}).values()]
        if "items" in schema:
            children.append(schema["items"])
        for child in children:
            found += ruled(child)
        return found

    objects = ruled(crd_spec_schema())
    assert [schema["default"] for schema in objects] == [{"min": 1, "max": 1}]
    for schema in objects:
        assert schema["default"] == apiserver_defaults(schema, copy.deepcopy(schema["default"]))


def test_the_installation_chooses_the_images_of_a_spec_that_names_none() -> None:
    def parsed(spec: dict[str, Any], images: dict[str, str] | None) -> tuple[str, str, str]:
        meta = {"name": "a", "namespace": "b", "uid": "c"}
        s = VoiceDeployment.from_object({"metadata": meta, "spec": spec}, images).spec
        return s.runtime.image, s.tts.image, s.llm.image

    chosen = {"runtime": "registry.local/runtime:7", "tts": "registry.local/tts:7"}
    assert parsed(MINIMAL, chosen)[:2] == ("registry.local/runtime:7", "registry.local/tts:7")
    assert parsed(MINIMAL, None) == (
        DEFAULT_IMAGES["runtime"],
        DEFAULT_IMAGES["tts"],
        DEFAULT_IMAGES["llm"],
    )
    named = {**MINIMAL, "runtime": {"image": "mine:1"}}
    assert parsed(named, chosen)[0] == "mine:1"  # the spec's own choice wins
    # Not a schema default: the apiserver must not write one image into every object.
    runtime = crd_spec_schema()["properties"]["runtime"]["properties"]["image"]
    assert "default" not in runtime and "PARLEY_OPERATOR_RUNTIME_IMAGE" in runtime["description"]


def test_a_minimal_spec_gets_every_default() -> None:
    spec = with_defaults(MINIMAL)
    assert spec["runtime"]["replicas"] == {"min": 1, "max": 1}
    assert spec["runtime"]["resources"] == DEFAULT_RESOURCES["runtime"]
    assert spec["runtime"]["asr"] == {"model": "tiny.en", "device": "cpu"}
    assert spec["tts"]["modelDir"] == "/models/xtts-v2"
    assert spec["slo"] == {"ttfaP95Ms": 250, "bargeInP95Ms": 150}
    assert spec["soak"] == {
        "schedule": "",
        "sessions": 4,
        "durationSeconds": 300,
        "dutyCycle": 0.3,
        "maxErrorRate": 0.05,
        "history": 5,
        "ttlSecondsAfterFinished": 3600,
    }
    assert "gpu" not in spec and "models" not in spec and "args" not in spec["llm"]


# -- the generated CRD against pydantic's own view of the models -------------------------------

#: What both a structural schema and pydantic's JSON schema say about a field.
COMPARED = (
    "type",
    "description",
    "required",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "x-kubernetes-validations",
)


def reduced(schema: Schema, defs: Schema) -> Schema:
    """`schema` (pydantic's JSON schema, or the CRD's) reduced to the COMPARED keywords:
    references resolved, `X | None` read as an optional X, whitespace in descriptions folded."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return reduced({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs)
    if "anyOf" in schema:
        (present,) = [s for s in schema["anyOf"] if s != {"type": "null"}]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return reduced({**present, **rest}, defs)
    out = {k: v for k, v in schema.items() if k in COMPARED and v is not None}
    if "description" in out:
        out["description"] = " ".join(out["description"].split())
    if "properties" in schema:
        out["properties"] = {k: reduced(v, defs) for k, v in schema["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = reduced(schema[key], defs)
    return out


def without_factory_defaults(generated: Schema, pydantic: Schema) -> Schema:
    """The generated schema less the defaults pydantic leaves out of its JSON schema: those of
    `default_factory` fields (`{}` for an object, the default resources), which
    test_the_models_defaults_are_the_crds checks instead."""
    out = {k: v for k, v in generated.items() if k != "default" or "default" in pydantic}
    for key in ("items", "additionalProperties"):
        if key in generated:
            out[key] = without_factory_defaults(generated[key], pydantic.get(key, {}))
    if "properties" in generated:
        out["properties"] = {
            name: without_factory_defaults(child, pydantic.get("properties", {}).get(name, {}))
            for name, child in generated["properties"].items()
        }
    return out


def test_the_crd_says_what_pydantic_says_about_the_models() -> None:
    """Property names (recursively), types, required fields, defaults, enums, ranges, lengths,
    patterns, descriptions and CEL rules: the generated CRD against pydantic's JSON schema."""
    json_schema = VoiceDeploymentSpec.model_json_schema(by_alias=True)
    expected = reduced(json_schema, json_schema.get("$defs", {}))
    generated = reduced(crd_spec_schema(), {})
    assert without_factory_defaults(generated, expected) == expected
