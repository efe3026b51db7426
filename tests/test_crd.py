"""The VoiceDeployment CRD: one source of truth, and validation in the real apiserver."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from parley_operator.api import crd, crd_yaml
from parley_operator.defaults import with_defaults
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
@pytest.mark.parametrize("example", ["gpu-exclusive.yaml", "gpu-shared.yaml", "cpu.yaml"])
def test_examples_apply_unchanged(cluster: ControlPlane, example: str) -> None:
    manifest = load(example)
    assert f"voicedeployment.parley.dev/{manifest['metadata']['name']} created" in apply(
        cluster, manifest
    )
    stored = json.loads(
        cluster.kubectl("get", "vd", manifest["metadata"]["name"], "-n", NAMESPACE, "-o", "json")
    )
    # Schema defaults are filled in by the apiserver, exactly as the operator's pure code does.
    assert stored["spec"] == with_defaults(manifest["spec"])
    assert stored["spec"]["slo"] == {"ttfaP95Ms": 250, "bargeInP95Ms": 150}
    assert stored["spec"]["runtime"]["sessionsPerPod"] >= 1
    assert stored["spec"]["scaling"]["enabled"] is True


@pytest.mark.k8s
def test_defaults(cluster: ControlPlane) -> None:
    stored = json.loads(cluster.kubectl("get", "vd", "edge-agent", "-n", NAMESPACE, "-o", "json"))
    spec = stored["spec"]
    assert spec["gpu"]["headroomGiB"] == 4
    assert spec["llm"]["maxModelLen"] == 8192 and spec["llm"]["replicas"] == 1
    assert spec["tts"]["voice"] == "en_US-joe-medium"
    assert spec["runtime"]["replicas"] == {"min": 1, "max": 1}


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
}


@pytest.mark.k8s
@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_specs_are_refused_with_a_readable_reason(cluster: ControlPlane, case: str) -> None:
    manifest, message = INVALID[case]
    with pytest.raises(RuntimeError, match="is invalid") as refused:
        apply(cluster, manifest)
    assert message in str(refused.value)


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
