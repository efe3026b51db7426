"""The operator against the real control plane: VoiceDeployments become running workloads on
fake GPU nodes, status flows back, budgets only visible at reconcile time are reported, a
restart changes nothing, and deleting a VoiceDeployment removes everything."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from tests.support.cluster import ControlPlane
from tests.support.operator_env import operator_namespace
from tests.support.waiting import eventually

pytestmark = pytest.mark.k8s
REPO = Path(__file__).resolve().parents[1]
NS = "operator-tests"


def get(plane: ControlPlane, kind: str, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(plane.kubectl("get", kind, name, "-n", NS, "-o", "json"))
    except RuntimeError:
        return None


def condition(vd: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    conditions = ((vd or {}).get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def apply_example(
    plane: ControlPlane, name: str, change: Callable[[dict[str, Any]], None] = lambda s: None
) -> dict[str, Any]:
    manifest = yaml.safe_load((REPO / "examples" / name).read_text())
    change(manifest)
    plane.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(manifest))
    return manifest


def operator_runner() -> KopfRunner:
    return KopfRunner(
        ["run", "--standalone", "--namespace", NS, "-m", "parley_operator.handlers"],
        timeout=60,
    )


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    with operator_namespace(control_plane, NS) as plane:
        yield plane


@pytest.fixture(scope="module")
def operator(cluster: ControlPlane) -> Iterator[KopfRunner]:
    with operator_runner() as runner:
        yield runner


def ready(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    vd = get(plane, "vd", name)
    return vd if condition(vd, "Ready").get("status") == "True" else None


def test_cpu_example_becomes_ready_with_its_children(
    cluster: ControlPlane, operator: KopfRunner
) -> None:
    apply_example(cluster, "cpu.yaml")
    vd = eventually(lambda: ready(cluster, "cpu-agent"), "cpu-agent Ready")
    assert vd["status"]["runtime"] == {"desired": 1, "ready": 1}
    assert vd["status"]["runtimeReplicas"] == "1/1"
    assert vd["status"]["observedGeneration"] == vd["metadata"]["generation"]
    assert condition(vd, "VRAMBudget")["reason"] == "NoGPU"
    for kind, name in [
        ("deployment", "cpu-agent-runtime"),
        ("deployment", "cpu-agent-tts"),
        ("service", "cpu-agent-runtime"),
        ("pdb", "cpu-agent-runtime"),
    ]:
        child = get(cluster, kind, name)
        assert child is not None, f"{kind}/{name} missing"
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["kind"] == "VoiceDeployment" and owner["uid"] == vd["metadata"]["uid"]
    assert get(cluster, "deployment", "cpu-agent-llm") is None  # external LLM endpoint
    runtime = get(cluster, "deployment", "cpu-agent-runtime")
    container = runtime["spec"]["template"]["spec"]["containers"][0]
    assert "http://llm.default.svc:8000/v1" in container["command"] + container.get("args", [])


def test_gpu_example_gets_vllm_with_its_cap_on_gpu_nodes(
    cluster: ControlPlane, operator: KopfRunner
) -> None:
    apply_example(cluster, "gpu-exclusive.yaml")
    vd = eventually(lambda: ready(cluster, "support-agent"), "support-agent Ready", timeout=90)
    assert vd["status"]["runtime"] == {"desired": 2, "ready": 2}
    llm = get(cluster, "deployment", "support-agent-llm")
    container = llm["spec"]["template"]["spec"]["containers"][0]
    assert "--gpu-memory-utilization" in container["args"]
    assert container["args"][container["args"].index("--gpu-memory-utilization") + 1] == "0.45"
    assert container["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", NS, "-l", "parley.dev/voicedeployment=support-agent", "-o", "json"
        )
    )
    assert {p["spec"]["nodeName"] for p in pods["items"]} <= {"gpu-h100-0", "gpu-h100-1"}
    assert [g["usedGiB"] for g in vd["status"]["vramPlan"]] == [6, 36, 8]


def test_changing_the_llm_model_rolls_vllm(cluster: ControlPlane, operator: KopfRunner) -> None:
    eventually(lambda: ready(cluster, "support-agent"), "support-agent Ready", timeout=90)
    before = get(cluster, "deployment", "support-agent-llm")
    cluster.kubectl(
        "patch",
        "vd",
        "support-agent",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec": {"llm": {"model": "Qwen/Qwen2.5-14B-Instruct"}}}',
    )

    def rolled() -> dict[str, Any] | None:
        after = get(cluster, "deployment", "support-agent-llm")
        args = after["spec"]["template"]["spec"]["containers"][0]["args"]
        return after if "Qwen/Qwen2.5-14B-Instruct" in args else None

    completed_before = rollouts_completed(cluster, "support-agent")
    after = eventually(rolled, "the vLLM Deployment rolled")
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    vd = eventually(
        lambda: (
            (v := ready(cluster, "support-agent"))
            and condition(v, "Progressing")["status"] == "False"
            and v
        ),
        "support-agent rolled out and Ready",
    )
    assert vd["status"]["observedGeneration"] == vd["metadata"]["generation"]
    eventually(
        lambda: rollouts_completed(cluster, "support-agent") > completed_before,
        "a RolloutComplete event",
    )
    time.sleep(2)  # room for a duplicate to arrive: there must be none
    assert rollouts_completed(cluster, "support-agent") == completed_before + 1


def rollouts_completed(plane: ControlPlane, name: str) -> int:
    events = json.loads(plane.kubectl("get", "events", "-n", NS, "-o", "json"))["items"]
    return sum(
        e.get("count", 1)
        for e in events
        if e["involvedObject"]["name"] == name and e["reason"] == "RolloutComplete"
    )


def test_a_child_deleted_by_hand_is_put_back(cluster: ControlPlane, operator: KopfRunner) -> None:
    eventually(lambda: ready(cluster, "cpu-agent"), "cpu-agent Ready")
    uid = get(cluster, "deployment", "cpu-agent-tts")["metadata"]["uid"]
    cluster.kubectl("delete", "deployment", "cpu-agent-tts", "-n", NS, "--wait=true")
    eventually(
        lambda: (d := get(cluster, "deployment", "cpu-agent-tts")) and d["metadata"]["uid"] != uid,
        "cpu-agent-tts applied again",
    )
    vd = eventually(lambda: ready(cluster, "cpu-agent"), "cpu-agent Ready again")
    assert vd["status"]["tts"] == {"desired": 1, "ready": 1}


def test_a_reconcile_keeps_the_scaled_runtime_replicas(
    cluster: ControlPlane, operator: KopfRunner
) -> None:
    """The autoscaler's decision (here: a scale to 3) survives a spec change; a lower max
    clamps it."""
    eventually(lambda: ready(cluster, "cpu-agent"), "cpu-agent Ready")
    cluster.kubectl("scale", "deployment", "cpu-agent-runtime", "-n", NS, "--replicas=3")

    def runtime_with(env: str, replicas: int) -> dict[str, Any] | None:
        d = get(cluster, "deployment", "cpu-agent-runtime")
        names = [e["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]]
        return d if env in names and d["spec"]["replicas"] == replicas else None

    patch = {"spec": {"runtime": {"env": [{"name": "PARLEY_PROBE", "value": "1"}]}}}
    cluster.kubectl("patch", "vd", "cpu-agent", "-n", NS, "--type=merge", "-p", json.dumps(patch))
    eventually(lambda: runtime_with("PARLEY_PROBE", 3), "the spec change applied, 3 kept")
    patch = {"spec": {"runtime": {"replicas": {"max": 2}}}}
    cluster.kubectl("patch", "vd", "cpu-agent", "-n", NS, "--type=merge", "-p", json.dumps(patch))
    eventually(lambda: runtime_with("PARLEY_PROBE", 2), "replicas clamped to the new max")


def test_reconcile_time_budget_problem_sets_the_condition_and_an_event(
    cluster: ControlPlane, operator: KopfRunner
) -> None:
    def on_l4(manifest: dict[str, Any]) -> None:
        manifest["metadata"]["name"] = "wrong-gpus"
        manifest["spec"]["gpu"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-L4"}

    apply_example(cluster, "gpu-exclusive.yaml", on_l4)  # 80 GiB assumed, L4 nodes have 22.5
    vd = eventually(
        lambda: (
            (v := get(cluster, "vd", "wrong-gpus"))
            and condition(v, "VRAMBudget").get("status") == "False"
            and v
        ),
        "VRAMBudget=False",
    )
    assert condition(vd, "VRAMBudget")["reason"] == "NodeGPUSmallerThanSpec"
    assert "22.5" in condition(vd, "VRAMBudget")["message"]
    assert condition(vd, "Ready")["status"] == "False"
    events = eventually(
        lambda: [
            e
            for e in json.loads(cluster.kubectl("get", "events", "-n", NS, "-o", "json"))["items"]
            if e["involvedObject"]["name"] == "wrong-gpus" and e["reason"] == "VRAMBudgetRefused"
        ],
        "a VRAMBudgetRefused event",
    )
    assert "22.5" in events[0]["message"]
    assert get(cluster, "deployment", "wrong-gpus-llm") is None


def test_restart_changes_nothing_and_delete_removes_everything(
    cluster: ControlPlane, operator: KopfRunner
) -> None:
    eventually(lambda: ready(cluster, "cpu-agent"), "cpu-agent Ready")

    def versions() -> dict[str, object]:
        """What the operator decides: each object's spec generation (the status of the
        children is the controllers' and kwok's, which may still move), and the verdicts in
        each VoiceDeployment's conditions."""
        items = []
        for kind in ("vd", "deployments", "services", "pdb"):
            items += json.loads(cluster.kubectl("get", kind, "-n", NS, "-o", "json"))["items"]
        found: dict[str, object] = {}
        for i in items:
            key = f"{i['kind']}/{i['metadata']['name']}"
            found[key] = i["metadata"].get("generation")
            if i["kind"] == "VoiceDeployment":
                conditions = (i.get("status") or {}).get("conditions") or []
                found[f"{key}/conditions"] = sorted(
                    (c["type"], c["status"], c.get("reason", "")) for c in conditions
                )
        return found

    def settled() -> dict[str, object] | None:
        """The versions once nothing changed for 3 autoscaler intervals (5 s each)."""
        first = versions()
        time.sleep(16)
        return first if versions() == first else None

    before = eventually(settled, "the status settled", timeout=90)
    operator.__exit__(None, None, None)
    with operator_runner():
        time.sleep(8)
        assert versions() == before
    with operator_runner():
        cluster.kubectl("delete", "vd", "cpu-agent", "-n", NS, "--wait=true", "--timeout=60s")
        eventually(
            lambda: (
                get(cluster, "deployment", "cpu-agent-runtime") is None
                and get(cluster, "service", "cpu-agent-runtime") is None
            ),
            "children collected",
        )
