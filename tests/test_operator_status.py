"""The status side of the operator without a cluster: the status computed from children's
views, which view of a child is fresher, which transitions make Events, which nodes' GPU
memory counts, the publisher that writes each change once, and what a spec the models refuse
becomes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from parley_operator import handlers
from parley_operator.api import VoiceDeployment
from parley_operator.conditions import ConditionType
from parley_operator.publish import StatusPublisher
from parley_operator.reconcile import compute_status, plan_for, wanted_components
from parley_operator.status import (
    Notice,
    find_condition,
    freshest,
    notable_transitions,
    reconcile_failure,
    rollout_view,
)
from parley_operator.vram import selected_gpu_memory_gib

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"}
L4 = {"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.memory": "23034"}


def manifest(name: str, change: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The object as the API returns it (what the publisher and Events refer to)."""
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    if change is not None:
        change(loaded["spec"])
    loaded["metadata"].update(namespace="ns", uid="uid-1", generation=1)
    return loaded


def voice_deployment(
    name: str, change: Callable[[dict[str, Any]], None] | None = None
) -> VoiceDeployment:
    """The object as the pure functions take it."""
    return VoiceDeployment.model_validate(manifest(name, change))


def deployment(replicas: int, ready: int, generation: int = 1, observed: int = 1) -> dict:
    return {
        "metadata": {"name": "x", "generation": generation, "labels": {"a": "b"}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": []}}},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }


def status_of(vd: VoiceDeployment, children: dict[str, Any], previous: dict | None = None) -> dict:
    plan = plan_for(vd.spec, [H100])
    views = {name: rollout_view(d) for name, d in children.items()}
    return compute_status(vd, plan, views, previous or {})


def state(status: dict[str, Any], kind: ConditionType) -> str:
    return find_condition(status, kind).get("status", "")


# -- the status -------------------------------------------------------------------------------


def test_rollout_view_keeps_only_what_the_status_reads() -> None:
    view = rollout_view(deployment(replicas=2, ready=1, generation=3, observed=2))
    assert view == {
        "metadata": {"generation": 3},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 1,
        },
    }


def test_an_external_llm_is_not_waited_for() -> None:
    vd = voice_deployment("cpu.yaml")
    assert wanted_components(vd.spec) == ("runtime", "tts")
    status = status_of(vd, {"runtime": deployment(1, 1), "tts": deployment(1, 1)})
    assert state(status, ConditionType.READY) == "True"
    assert status["llm"] == {"desired": 0, "ready": 0}
    assert status["runtimeReplicas"] == "1/1"


def test_a_wanted_child_that_does_not_exist_keeps_it_unready() -> None:
    vd = voice_deployment("gpu-exclusive.yaml")
    status = status_of(vd, {"runtime": deployment(2, 2), "tts": deployment(1, 1)})
    ready = find_condition(status, ConditionType.READY)
    assert ready["status"] == "False"
    assert ready["message"] == "waiting for ready replicas: llm"


def test_a_rollout_in_progress_and_its_end() -> None:
    vd = voice_deployment("cpu.yaml")
    rolling = status_of(vd, {"runtime": deployment(1, 1, generation=2), "tts": deployment(1, 1)})
    assert find_condition(rolling, ConditionType.PROGRESSING)["message"] == "rolling out: runtime"
    done = status_of(vd, {"runtime": deployment(1, 1), "tts": deployment(1, 1)}, rolling)
    assert state(done, ConditionType.PROGRESSING) == "False"
    assert notable_transitions(rolling, done) == [
        Notice("Normal", "RolloutComplete", "all components rolled out")
    ]
    assert notable_transitions(done, done) == []


def test_unchanged_conditions_keep_their_transition_time_and_foreign_ones_survive() -> None:
    vd = voice_deployment("cpu.yaml")
    first = status_of(vd, {"runtime": deployment(1, 1), "tts": deployment(1, 1)})
    soak = {"type": "SoakPassing", "status": "True", "reason": "SoakPassed", "message": "ok"}
    earlier = {
        **first,
        "conditions": [{**c, "lastTransitionTime": "then"} for c in first["conditions"]] + [soak],
    }
    again = status_of(vd, {"runtime": deployment(1, 1), "tts": deployment(1, 1)}, earlier)
    assert {c["lastTransitionTime"] for c in again["conditions"] if c is not soak} == {"then"}
    assert soak in again["conditions"]


def test_a_budget_refusal_is_one_warning() -> None:
    vd = voice_deployment(
        "gpu-exclusive.yaml",
        lambda spec: spec["gpu"].update(nodeSelector={"nvidia.com/gpu.product": "NVIDIA-L4"}),
    )
    plan = plan_for(vd.spec, [H100, L4])
    assert not plan.fits
    refused = compute_status(vd, plan, {}, {})
    notices = notable_transitions({}, refused)
    assert [(n.type, n.reason) for n in notices] == [("Warning", "VRAMBudgetRefused")]
    assert "22.5" in notices[0].message
    assert notable_transitions(refused, compute_status(vd, plan, {}, refused)) == []


# -- which view, which nodes -----------------------------------------------------------------


def test_the_watch_wins_unless_it_is_behind_the_apply() -> None:
    watched = {"runtime": rollout_view(deployment(1, 1)), "tts": rollout_view(deployment(1, 1))}
    applied = {
        "runtime": rollout_view(deployment(1, 0)),  # same generation, older status
        "tts": rollout_view(deployment(1, 0, generation=2)),  # the watch has not seen gen 2
        "llm": rollout_view(deployment(1, 0)),  # the watch has not seen it at all
    }
    views = freshest(watched, applied)
    assert views["runtime"] is watched["runtime"]
    assert views["tts"] is applied["tts"]
    assert views["llm"] is applied["llm"]


def test_gpu_memory_of_the_selected_nodes() -> None:
    nodes = [H100, L4, {"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.memory": "n/a"}]
    assert selected_gpu_memory_gib(nodes, {"nvidia.com/gpu.product": "NVIDIA-L4"}) == 23034 / 1024
    assert selected_gpu_memory_gib(nodes, {"nvidia.com/gpu.product": "NVIDIA-A100"}) is None
    assert selected_gpu_memory_gib(nodes, {}) is None  # may land anywhere: nothing held against it
    everything = {"nvidia.com/gpu.memory": "1"}
    assert (
        selected_gpu_memory_gib([*nodes, everything], {"nvidia.com/gpu.product": "NVIDIA-L4"})
        == 23034 / 1024
    )


# -- the publisher ---------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict]] = []
        self.events: list[Notice] = []

    async def patch(self, namespace: str, name: str, status: dict) -> None:
        await asyncio.sleep(0.01)  # a round-trip, during which other writers queue
        self.patches.append((namespace, name, status))

    def post(self, vd: dict, notice: Notice) -> None:
        self.events.append(notice)


async def test_concurrent_refreshes_write_one_patch_and_one_event() -> None:
    obj, vd = manifest("cpu.yaml"), voice_deployment("cpu.yaml")
    obj["status"] = status_of(
        vd, {"runtime": deployment(1, 1, generation=2), "tts": deployment(1, 1)}
    )
    recorder = Recorder()
    publisher = StatusPublisher(recorder.patch, recorder.post)
    done = {"runtime": rollout_view(deployment(1, 1)), "tts": rollout_view(deployment(1, 1))}
    plan = plan_for(vd.spec, [])
    written = await asyncio.gather(
        *(publisher.publish(obj, lambda p: compute_status(vd, plan, done, p)) for _ in range(5))
    )
    assert written.count(True) == 1
    assert len(recorder.patches) == 1
    assert [n.reason for n in recorder.events] == ["RolloutComplete"]


async def test_what_was_written_beats_what_was_seen_until_forgotten() -> None:
    obj, vd = manifest("cpu.yaml"), voice_deployment("cpu.yaml")
    recorder = Recorder()
    publisher = StatusPublisher(recorder.patch, recorder.post)
    plan = plan_for(vd.spec, [])
    ready = {"runtime": rollout_view(deployment(1, 1)), "tts": rollout_view(deployment(1, 1))}
    await publisher.publish(obj, lambda p: compute_status(vd, plan, ready, p))
    soak = {"type": "SoakPassing", "status": "False", "reason": "SoakNotRun", "message": "-"}
    obj["status"] = {"conditions": [soak], "sessions": 3}  # stale own fields, a foreign condition
    previous = publisher.previous(obj)
    assert previous["runtimeReplicas"] == "1/1"
    assert previous["sessions"] == 3
    assert soak in previous["conditions"]
    assert state(previous, ConditionType.READY) == "True"
    publisher.forget(obj["metadata"]["uid"])
    assert publisher.previous(obj) == obj["status"]


def test_a_reconcile_failure_lasts_until_a_reconcile_succeeds() -> None:
    vd = voice_deployment("cpu.yaml")
    plan = plan_for(vd.spec, [])
    children = {"runtime": rollout_view(deployment(1, 1)), "tts": rollout_view(deployment(1, 1))}
    failed = compute_status(vd, plan, children, {}, "the apiserver refused a child: 500 full")
    assert state(failed, ConditionType.DEGRADED) == "True"
    assert state(failed, ConditionType.READY) == "False"
    refreshed = compute_status(vd, plan, children, failed, reconcile_failure(failed))
    assert find_condition(refreshed, ConditionType.DEGRADED) == find_condition(
        failed, ConditionType.DEGRADED
    )
    recovered = compute_status(vd, plan, children, refreshed)
    assert state(recovered, ConditionType.DEGRADED) == "False"
    assert reconcile_failure(recovered) is None


async def test_a_spec_the_models_refuse_is_degraded_and_a_permanent_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An object the CRD let through but the models refuse (stored under an older CRD, say) is
    reported, not crashed on: Degraded with the refused field, and no retries until it changes."""
    recorder = Recorder()
    monkeypatch.setattr(
        handlers, "publisher", lambda: StatusPublisher(recorder.patch, recorder.post)
    )
    body = manifest("cpu.yaml", lambda spec: spec["llm"].update(maxModelLen=1))
    with pytest.raises(kopf.PermanentError, match=r"spec\.llm\.maxModelLen"):
        await handlers.reconcile(
            body=body, reason=kopf.Reason.UPDATE, children_by_owner={}, gpu_nodes={}
        )
    ((namespace, name, status),) = recorder.patches
    assert (namespace, name) == ("ns", "cpu-agent")
    assert status["observedGeneration"] == 1
    degraded = find_condition(status, ConditionType.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", "SpecRefused")
    assert (
        "spec.llm.maxModelLen: Input should be greater than or equal to 256"
        in (degraded["message"])
    )
    assert state(status, ConditionType.READY) == "False"
