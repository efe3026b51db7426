"""The test control plane itself is real: CRDs with CEL validation, scheduling onto fake GPU
nodes, Jobs completing, garbage collection, and helm output accepted by the apiserver."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.cluster import ControlPlane
from tests.support.waiting import eventually

pytestmark = pytest.mark.k8s

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.parley.dev"},
    "spec": {
        "group": "test.parley.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "min": {"type": "integer", "minimum": 0},
                                    "max": {"type": "integer", "minimum": 0},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "min must not exceed max",
                                    }
                                ],
                            },
                            "status": {
                                "type": "object",
                                "properties": {"ready": {"type": "boolean"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def objects(plane: ControlPlane, *args: str) -> list[dict[str, object]]:
    return json.loads(plane.kubectl("get", *args, "-o", "json"))["items"]


def widget(name: str, low: int, high: int) -> str:
    return json.dumps(
        {
            "apiVersion": "test.parley.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"min": low, "max": high},
        }
    )


def test_crd_with_cel_validation_and_status(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.test.parley.dev", "--timeout=30s"
    )
    with pytest.raises(RuntimeError, match="min must not exceed max"):
        control_plane.kubectl("create", "-f", "-", input=widget("bad", 5, 2))
    control_plane.kubectl("create", "-f", "-", input=widget("good", 1, 3))
    control_plane.kubectl(
        "patch",
        "widget",
        "good",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"ready": true}}',
    )
    got = json.loads(control_plane.kubectl("get", "widget", "good", "-o", "json"))
    assert got["status"] == {"ready": True} and got["spec"] == {"min": 1, "max": 3}


def test_gpu_deployment_runs_on_a_fake_gpu_node(control_plane: ControlPlane) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gpu-app", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "gpu-app"}},
            "template": {
                "metadata": {"labels": {"app": "gpu-app"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    "containers": [
                        {
                            "name": "main",
                            "image": "example.invalid/gpu-app:1",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                        }
                    ],
                },
            },
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(deployment))

    def ready() -> bool:
        got = json.loads(control_plane.kubectl("get", "deployment", "gpu-app", "-o", "json"))
        return got.get("status", {}).get("readyReplicas") == 2

    eventually(ready, "2 ready replicas of gpu-app")
    pods = objects(control_plane, "pods", "-l", "app=gpu-app")
    assert {p["status"]["phase"] for p in pods} == {"Running"}
    assert {p["spec"]["nodeName"] for p in pods} <= {"gpu-h100-0", "gpu-h100-1"}

    control_plane.kubectl("delete", "deployment", "gpu-app", "--wait=false")
    eventually(
        lambda: not objects(control_plane, "replicasets", "-l", "app=gpu-app"),
        "the ReplicaSet garbage-collected",
    )
    eventually(
        lambda: not objects(control_plane, "pods", "-l", "app=gpu-app"),
        "the pods garbage-collected",
    )


def test_the_fake_nodes_keep_a_renewed_lease(control_plane: ControlPlane) -> None:
    """Leases are the fake nodes' heartbeat: without them the node lifecycle controller takes
    every node NotReady each grace period, and their pods with it."""
    nodes = {n["metadata"]["name"] for n in objects(control_plane, "nodes")}
    leases = {
        lease["metadata"]["name"]: lease["spec"]["renewTime"]
        for lease in objects(control_plane, "leases", "-n", "kube-node-lease")
    }
    assert leases.keys() == nodes
    eventually(
        lambda: any(
            lease["spec"]["renewTime"] != leases[lease["metadata"]["name"]]
            for lease in objects(control_plane, "leases", "-n", "kube-node-lease")
        ),
        "a node lease renewed",
    )


def test_job_completes(control_plane: ControlPlane) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "soak", "namespace": "default"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "example.invalid/soak:1"}],
                }
            },
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(job))
    control_plane.kubectl("wait", "--for=condition=Complete", "job/soak", "--timeout=60s")
    (pod,) = objects(control_plane, "pods", "-l", "job-name=soak")
    assert pod["status"]["phase"] == "Succeeded"


def test_helm_template_applies_with_server_side_dry_run(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    chart = tmp_path / "trivial"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: trivial\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    rendered = subprocess.run(
        [str(control_plane.bin / "helm"), "template", "demo", str(chart), "--namespace", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "demo-config" in rendered
    out = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=rendered
    )
    assert "configmap/demo-config serverside-applied (server dry run)" in out
    with pytest.raises(RuntimeError, match="not found"):
        control_plane.kubectl("get", "configmap", "demo-config")
