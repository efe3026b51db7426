"""The VoiceDeployment CRD: one source of truth, and validation in the real apiserver."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from parley_operator.api import crd, crd_yaml, with_defaults
from tests.support.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NAMESPACE = "crd-tests"


def test_the_crd_file_is_the_rendered_api() -> None:
    on_disk = (REPO / "crds" / "voicedeployment.yaml").read_text()
    assert on_disk == crd_yaml(), (
        "crds/ is stale: run `parley operator crd > crds/voicedeployment.yaml`"
    )


def test_every_field_is_described() -> None:
    def walk(schema: dict[str, Any], path: str) -> Iterator[str]:
        for name, child in schema.get("properties", {}).items():
            here = f"{path}.{name}"
            if name not in ("apiVersion", "kind", "metadata") and not child.get("description"):
                yield here
            yield from walk(child, here)
        if "items" in schema:
            yield from walk(schema["items"], f"{path}[]")

    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert list(walk(root["properties"]["spec"], "spec")) == []


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    control_plane.kubectl(
        "apply", "--server-side", "-f", str(REPO / "crds" / "voicedeployment.yaml")
    )
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/voicedeployments.parley.dev", "--timeout=30s"
    )
    control_plane.kubectl("create", "namespace", NAMESPACE)
    return control_plane


def apply(plane: ControlPlane, manifest: dict[str, Any]) -> str:
    return plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(manifest))


@pytest.mark.k8s
@pytest.mark.parametrize(
    "example",
    ["gpu-exclusive.yaml", "gpu-shared.yaml", "cpu.yaml", "gpu-exclusive-with-models.yaml"],
)
def test_examples_apply_unchanged(cluster: ControlPlane, example: str) -> None:
    manifest = load(example)
    assert f"voicedeployment.parley.dev/{manifest['metadata']['name']} created" in apply(
        cluster, manifest
    )
    stored = json.loads(
        cluster.kubectl("get", "vd", manifest["metadata"]["name"], "-n", NAMESPACE, "-o", "json")
    )
    # The apiserver fills in the schema's defaults, exactly as the models do.
    assert stored["spec"] == with_defaults(manifest["spec"])
    assert stored["spec"]["slo"] == {"ttfaP95Ms": 250, "bargeInP95Ms": 150}
    assert stored["spec"]["runtime"]["sessionsPerPod"] >= 1
    assert stored["spec"]["scaling"]["enabled"] is True


@pytest.mark.k8s
def test_a_minimal_spec_gets_the_models_defaults(cluster: ControlPlane) -> None:
    """Objects defaulted to `{}` (runtime, its replicas and asr, tts, slo, ...) get their
    fields' defaults in turn."""
    manifest = {
        "apiVersion": "parley.dev/v1alpha1",
        "kind": "VoiceDeployment",
        "metadata": {"name": "minimal-agent"},
        "spec": {"llm": {"endpoint": "http://llm:8000/v1", "model": "m"}},
    }
    apply(cluster, manifest)
    stored = json.loads(
        cluster.kubectl("get", "vd", "minimal-agent", "-n", NAMESPACE, "-o", "json")
    )
    assert stored["spec"] == with_defaults(manifest["spec"])
    assert stored["spec"]["runtime"]["replicas"] == {"min": 1, "max": 1}


@pytest.mark.k8s
def test_defaults(cluster: ControlPlane) -> None:
    stored = json.loads(cluster.kubectl("get", "vd", "edge-agent", "-n", NAMESPACE, "-o", "json"))
    spec = stored["spec"]
    assert spec["gpu"]["headroomGiB"] == 4
    assert spec["llm"]["maxModelLen"] == 8192 and spec["llm"]["replicas"] == 1
    assert spec["tts"]["voice"] == "en_US-joe-medium"
    assert spec["tts"]["modelDir"] == "/models/xtts-v2"
    assert spec["runtime"]["replicas"] == {"min": 1, "max": 1}
    # Requests only: the GPU limit comes from the VRAM plan.
    assert spec["runtime"]["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    assert spec["llm"]["resources"] == {"requests": {"cpu": "2", "memory": "16Gi"}}
    assert spec["tts"]["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    assert "models" not in spec
    offline = json.loads(
        cluster.kubectl("get", "vd", "offline-agent", "-n", NAMESPACE, "-o", "json")
    )
    assert offline["spec"]["models"] == {
        "claimName": "voice-models",
        "mountPath": "/models",
        "readOnly": True,
    }


@pytest.mark.k8s
def test_resources_given_replace_the_default(cluster: ControlPlane) -> None:
    manifest = copy.deepcopy(load("cpu.yaml"))
    manifest["metadata"]["name"] = "sized-agent"
    manifest["spec"]["runtime"]["resources"] = {"limits": {"memory": "2Gi"}}
    apply(cluster, manifest)
    stored = json.loads(cluster.kubectl("get", "vd", "sized-agent", "-n", NAMESPACE, "-o", "json"))
    assert stored["spec"]["runtime"]["resources"] == {"limits": {"memory": "2Gi"}}
    assert stored["spec"] == with_defaults(manifest["spec"])


def mutate(example: str, change: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(load(example))
    manifest["metadata"]["name"] = "invalid"
    change(manifest["spec"])
    return manifest


INVALID = {
    "the shared GPU over its budget (examples/invalid/too-big.yaml)": (
        yaml.safe_load((EXAMPLES / "invalid" / "too-big.yaml").read_text()),
        "VRAM budget exceeded",
    ),
    "a cap over the per-GPU working cap": (
        mutate("gpu-exclusive.yaml", lambda s: s["llm"]["gpu"].update(vramGiB=77)),
        "VRAM budget: llm.gpu.vramGiB exceeds the per-GPU working cap",
    ),
    "min above max": (
        mutate("cpu.yaml", lambda s: s["runtime"]["replicas"].update(min=5, max=2)),
        "runtime.replicas.min must not exceed runtime.replicas.max",
    ),
    "both an endpoint and a managed vLLM": (
        mutate("gpu-exclusive.yaml", lambda s: s["llm"].update(endpoint="http://x:8000/v1")),
        "set either endpoint",
    ),
    "neither an endpoint nor a managed vLLM": (
        mutate("cpu.yaml", lambda s: s["llm"].pop("endpoint")),
        "set either endpoint",
    ),
    "GPU components without spec.gpu": (
        mutate("gpu-shared.yaml", lambda s: s.pop("gpu")),
        "set spec.gpu",
    ),
    "an unknown placement": (
        mutate("gpu-shared.yaml", lambda s: s["gpu"].update(placement="packed")),
        'supported values: "exclusive", "shared"',
    ),
    "a negative replica count": (
        mutate("cpu.yaml", lambda s: s["runtime"]["replicas"].update(min=-1)),
        "should be greater than or equal to 0",
    ),
    "models without a claim": (
        mutate("cpu.yaml", lambda s: s.update(models={"mountPath": "/models"})),
        "spec.models.claimName: Required value",
    ),
    "a claim name that is no object name": (
        mutate("cpu.yaml", lambda s: s.update(models={"claimName": "Voice_Models"})),
        "spec.models.claimName: Invalid value",
    ),
    "a relative models.mountPath": (
        mutate("cpu.yaml", lambda s: s.update(models={"claimName": "m", "mountPath": "models"})),
        "models.mountPath must be an absolute path",
    ),
    "a models.mountPath with a trailing slash": (
        mutate("cpu.yaml", lambda s: s.update(models={"claimName": "m", "mountPath": "/models/"})),
        "models.mountPath must be an absolute path",
    ),
    "models mounted over the pods' /tmp": (
        mutate("cpu.yaml", lambda s: s.update(models={"claimName": "m", "mountPath": "/tmp"})),
        "models.mountPath must not be, or contain, a path the pods mount already",
    ),
    "models mounted over the pods' cache": (
        mutate("cpu.yaml", lambda s: s.update(models={"claimName": "m", "mountPath": "/var"})),
        "models.mountPath must not be, or contain, a path the pods mount already",
    ),
    "a relative tts.modelDir": (
        mutate("cpu.yaml", lambda s: s["tts"].update(modelDir="xtts-v2")),
        "tts.modelDir must be an absolute path",
    ),
}


@pytest.mark.k8s
@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_specs_are_refused_with_a_readable_reason(cluster: ControlPlane, case: str) -> None:
    manifest, message = INVALID[case]
    with pytest.raises(RuntimeError, match="is invalid") as refused:
        apply(cluster, manifest)
    assert message in str(refused.value)


NAME_TOO_LONG = "metadata.name must be at most 55 characters"
NOT_DNS_1035 = "metadata.name must be a DNS-1035 label"


@pytest.mark.k8s
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 56, NAME_TOO_LONG),
        ("voice.agent", NOT_DNS_1035),  # a valid object name, but no Service name
        ("9lives", NOT_DNS_1035),
        ("agent-", NOT_DNS_1035),
    ],
)
def test_names_that_cannot_name_services_are_refused(
    cluster: ControlPlane, name: str, message: str
) -> None:
    manifest = copy.deepcopy(load("cpu.yaml"))
    manifest["metadata"]["name"] = name
    with pytest.raises(RuntimeError, match="is invalid") as refused:
        apply(cluster, manifest)
    assert message in str(refused.value)


@pytest.mark.k8s
def test_the_longest_name_is_accepted(cluster: ControlPlane) -> None:
    manifest = copy.deepcopy(load("cpu.yaml"))
    manifest["metadata"]["name"] = "a" * 55
    assert f"voicedeployment.parley.dev/{'a' * 55} created" in apply(cluster, manifest)


@pytest.mark.k8s
def test_status_subresource_and_printer_columns(cluster: ControlPlane) -> None:
    status = {
        "status": {
            "observedGeneration": 1,
            "runtimeReplicas": "1/3",
            "sessions": 4,
            "backpressure": "NORMAL",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllReplicasReady",
                    "message": "every component is ready",
                    "lastTransitionTime": "2026-11-21T10:00:00Z",
                }
            ],
        }
    }
    cluster.kubectl(
        "patch",
        "vd",
        "cpu-agent",
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    table = cluster.kubectl("get", "vd", "cpu-agent", "-n", NAMESPACE)
    header, row = table.strip().splitlines()
    assert header.split()[:5] == ["NAME", "READY", "RUNTIME", "SESSIONS", "BACKPRESSURE"]
    assert row.split()[:5] == ["cpu-agent", "True", "1/3", "4", "NORMAL"]
