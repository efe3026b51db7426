"""The status side of the operator without a cluster: the status computed from children's
views, which view of a child is fresher, which transitions make Events, which nodes' GPU
memory counts, the publisher that writes each change once, and what a spec the models refuse
becomes. And the autoscaler's side: the status, causes and Events of its decisions, and the
parts of its adapter that need no cluster (SCOS reads, the pod view, the stored state, the
turns with the reconcile, the metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml
from prometheus_client import REGISTRY

from parley_operator import handlers, metrics
from parley_operator.api import VoiceDeployment
from parley_operator.api.schema import MAX_SCALING_DECISIONS
from parley_operator.autoscaler import (
    DRAINING_ANNOTATION,
    STATE_ANNOTATION,
    RuntimePod,
    RuntimeReplicas,
    state_text,
    stored_state,
)
from parley_operator.conditions import ConditionType
from parley_operator.publish import StatusPublisher
from parley_operator.reconcile import compute_status, plan_for, wanted_components
from parley_operator.scaling import Direction, ScalerState, decide
from parley_operator.scrape import ScrapeFailure, pod_url, read_all, set_draining
from parley_operator.status import (
    Notice,
    ScalingCause,
    decision_cause,
    decision_notices,
    find_condition,
    freshest,
    notable_transitions,
    reconcile_failure,
    rollout_view,
    scaling_status,
)
from parley_operator.vram import selected_gpu_memory_gib
from tests.test_operator_scaling import REJECT, pod, policy, scos, unscraped

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


# -- the autoscaler: status, causes, Events ---------------------------------------------------

#: Two sessions per pod at 50 %: one session per pod at the target.
SCALING = policy(
    sessions_per_pod=2,
    target_utilization_pct=50,
    buffer_sessions=0,
    max_replicas=3,
    backpressure_window_s=2,
    scale_up_stabilization_s=0,
    scale_down_stabilization_s=8,
    drain_timeout_s=30,
    interval_s=1,
)


def scaled(
    previous: dict[str, Any],
    before: int,
    pods: list[Any],
    state: ScalerState,
    now: float,
    failures: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Any]:
    decision = decide(SCALING, before, pods, state, now)
    status = scaling_status(
        previous,
        policy=SCALING,
        generation=4,
        replicas_before=before,
        pods=pods,
        decision=decision,
        cause=decision_cause(SCALING, before, decision, pods),
        failures=failures or {},
        now=now,
    )
    return status, decision


def test_a_scale_up_in_status_with_its_cause_and_one_event() -> None:
    pods = [pod("a", 2, level=REJECT), pod("b", 1)]
    status, decision = scaled({}, 2, pods, ScalerState(), 1000.0)
    assert decision.direction == Direction.UP
    assert status["scaling"] == {
        "desiredReplicas": 3,
        "currentReplicas": 2,
        "sessions": 3,
        "capacity": 16,
        "highestBackpressure": {"level": 4, "name": "SESSION_REJECT", "pods": ["a"]},
        "unscrapedPods": [],
        "drainingPods": [],
        "decisions": [
            {
                "time": "1970-01-01T00:16:40Z",
                "direction": "up",
                "from": 2,
                "to": 3,
                "cause": "demand",
                "reason": decision.reason,
            }
        ],
    }
    assert (status["sessions"], status["backpressure"]) == (3, "SESSION_REJECT")
    (event,) = decision_notices(2, decision, ScalingCause.DEMAND, {})
    assert (event.type, event.reason) == ("Normal", "ScaleUp")
    assert event.message.startswith("replicas 2 → 3 (demand): demand (3 active + 0 buffer)")


def test_decisions_are_kept_newest_first_and_bounded_and_holds_are_not_listed() -> None:
    previous: dict[str, Any] = {}
    for second in range(MAX_SCALING_DECISIONS + 2):
        status, _ = scaled(previous, 1, [pod("a", 2)], ScalerState(), float(second))
        previous |= status
    times = [d["time"] for d in previous["scaling"]["decisions"]]
    assert len(times) == MAX_SCALING_DECISIONS and times == sorted(times, reverse=True)
    held, decision = scaled(previous, 2, [pod("a", 1), pod("b", 1)], ScalerState(), 99.0)
    assert decision.direction == Direction.HOLD
    assert held["scaling"]["decisions"] == previous["scaling"]["decisions"]
    assert decision_notices(2, decision, ScalingCause.STEADY, {}) == []


def test_a_persistent_scrape_failure_turns_signals_false_with_one_warning() -> None:
    ready = compute_status(
        voice_deployment("cpu.yaml"), plan_for(voice_deployment("cpu.yaml").spec, []), {}, {}
    )
    previous, state, seen, notices = dict(ready), ScalerState(), [], []
    for now in (100.0, 101.0, 102.0, 103.0, 104.0):
        status, decision = scaled(
            previous, 2, [pod("a", 1), unscraped("b")], state, now, {"b": "timeout"}
        )
        notices += notable_transitions(previous, previous | status)
        previous, state = previous | status, decision.state
        seen.append(state_of(previous, ConditionType.SIGNALS_AVAILABLE))
    assert seen == ["True", "True", "True", "False", "False"]  # 3 intervals of 1 s
    signals = find_condition(previous, ConditionType.SIGNALS_AVAILABLE)
    assert signals["reason"] == "ScrapeFailing"
    assert "b (timeout) since 1970-01-01T00:01:40Z" in signals["message"]
    assert signals["lastTransitionTime"] == "1970-01-01T00:01:43Z"
    assert [(n.type, n.reason) for n in notices] == [("Warning", "ScrapeFailing")]
    assert previous["scaling"]["unscrapedPods"] == ["b"]
    assert find_condition(previous, ConditionType.READY) == find_condition(
        ready, ConditionType.READY
    )
    # Another pod that does not answer either (b replaced by c): still the same failure.
    replaced, decision = scaled(previous, 2, [pod("a", 1), unscraped("c")], state, 105.0)
    assert find_condition(replaced, ConditionType.SIGNALS_AVAILABLE)["lastTransitionTime"] == (
        "1970-01-01T00:01:43Z"
    )
    assert state_of(replaced, ConditionType.SIGNALS_AVAILABLE) == "False"
    status, _ = scaled(previous | replaced, 2, [pod("a", 1), pod("c", 0)], decision.state, 106.0)
    assert state_of(status, ConditionType.SIGNALS_AVAILABLE) == "True"
    # A reconcile carries the condition over.
    again = compute_status(
        voice_deployment("cpu.yaml"),
        plan_for(voice_deployment("cpu.yaml").spec, []),
        {},
        previous | status,
    )
    assert find_condition(again, ConditionType.SIGNALS_AVAILABLE) == find_condition(
        status, ConditionType.SIGNALS_AVAILABLE
    )


def state_of(status: dict[str, Any], kind: ConditionType) -> str:
    return str(find_condition(status, kind).get("status", ""))


@pytest.mark.parametrize(
    ("before", "pods", "state", "now", "changes", "cause"),
    [
        (1, [pod("a", 2)], ScalerState(), 0.0, {}, ScalingCause.DEMAND),
        (0, [], ScalerState(), 0.0, {}, ScalingCause.MIN),
        (
            1,
            [pod("a", 1, level=REJECT)],
            ScalerState(pressure_since={"a": 0.0}),
            5.0,
            {},
            ScalingCause.BACKPRESSURE,
        ),
        (
            2,
            [pod("a", 1), pod("b", 1, draining_since=0.0)],
            ScalerState(draining={"b": 0.0}),
            1.0,
            {},
            ScalingCause.UNDRAIN,
        ),
        (
            2,
            [pod("a", 1), pod("b", 0)],
            ScalerState(low_since=0.0, low_peak=1),
            10.0,
            {},
            ScalingCause.LOW_DEMAND,
        ),
        (
            3,
            [pod("a", 1), pod("b", 1), pod("c", 1)],
            ScalerState(),
            0.0,
            {"max_replicas": 2},
            ScalingCause.ABOVE_MAX,
        ),
        (
            2,
            [pod("a", 1), pod("b", 0, draining_since=0.0)],
            ScalerState(draining={"b": 0.0}),
            3.0,
            {},
            ScalingCause.DRAINED,
        ),
        (
            2,
            [pod("a", 0), pod("b", 1, draining_since=0.0)],
            ScalerState(draining={"b": 0.0}),
            31.0,
            {},
            ScalingCause.DRAIN_TIMEOUT,
        ),
        (1, [pod("a", 0)], ScalerState(), 0.0, {}, ScalingCause.STEADY),
        (1, [unscraped("a")], ScalerState(), 0.0, {}, ScalingCause.SCRAPE_FAILED),
        (1, [pod("a", 0)], ScalerState(), 0.0, {"enabled": False}, ScalingCause.DISABLED),
    ],
)
def test_each_decision_has_one_cause_from_a_fixed_set(
    before: int,
    pods: list[Any],
    state: ScalerState,
    now: float,
    changes: dict[str, Any],
    cause: ScalingCause,
) -> None:
    scaling = replace(SCALING, **changes)
    decision = decide(scaling, before, pods, state, now)
    assert decision_cause(scaling, before, decision, pods) == cause


def test_a_drain_that_timed_out_with_sessions_is_a_warning() -> None:
    pods = [pod("a", 0), pod("b", 1, draining_since=0.0)]
    decision = decide(SCALING, 2, pods, ScalerState(draining={"b": 0.0}), 31.0)
    notices = decision_notices(2, decision, ScalingCause.DRAIN_TIMEOUT, {"b": 1})
    assert [(n.type, n.reason) for n in notices] == [
        ("Normal", "ScaleDown"),
        ("Warning", "SessionsCut"),
    ]
    assert notices[1].message == "drain timed out with sessions still live: b (1)"


# -- the autoscaler's adapter, without a cluster ---------------------------------------------


def test_a_runtime_pod_as_the_index_keeps_it() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "p", "annotations": {DRAINING_ANNOTATION: "2025-01-01T00:00:00Z"}},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    assert RuntimePod.from_body(body) == RuntimePod("p", "10.0.0.7", True, False, 1735689600.0)
    body["metadata"]["annotations"][DRAINING_ANNOTATION] = "yes"  # still a mark
    assert RuntimePod.from_body(body).draining_since == 0.0
    assert RuntimePod.from_body({"metadata": {"name": "q"}}) == RuntimePod(
        "q", None, False, False, None
    )
    assert RuntimePod.from_body(
        {**body, "metadata": {"name": "p", "deletionTimestamp": "x"}}
    ).terminating
    assert RuntimePod.from_body({**body, "status": {"phase": "Failed"}}).terminating


def test_the_scaler_state_goes_through_its_annotation_unchanged() -> None:
    state = ScalerState(low_since=1.5, low_peak=1, draining={"b": 3.0}, retired=("c",))
    text = state_text(state)
    vd = {"metadata": {"name": "vd", "annotations": {STATE_ANNOTATION: text}}}
    assert stored_state(vd) == (state, text)
    assert stored_state({"metadata": {}}) == (ScalerState(), None)
    for unreadable in ("{", "[]", '{"version": 9}', '{"draining": {"b": "soon"}}'):
        vd["metadata"]["annotations"][STATE_ANNOTATION] = unreadable
        assert stored_state(vd) == (ScalerState(), unreadable)


async def test_the_replicas_writers_start_from_the_freshest_view() -> None:
    replicas, key = RuntimeReplicas(), ("ns", "vd")
    watched = rollout_view(deployment(2, 2, generation=3))
    assert replicas.freshest(key, watched) == watched
    assert replicas.freshest(key, None) is None
    replicas.record(key, rollout_view(deployment(3, 2, generation=4)))  # a scale, not seen yet
    assert replicas.freshest(key, watched)["spec"]["replicas"] == 3
    caught_up = rollout_view(deployment(3, 3, generation=4))
    assert replicas.freshest(key, caught_up) is caught_up
    assert replicas.lock(key) is replicas.lock(key)
    replicas.forget(key)
    assert replicas.freshest(key, watched) == watched


async def test_the_publisher_remembers_the_fields_of_every_writer() -> None:
    obj, recorder = manifest("cpu.yaml"), Recorder()
    publisher = StatusPublisher(recorder.patch, recorder.post)
    assert await publisher.publish(obj, lambda p: {"runtimeReplicas": "1/1"})
    assert await publisher.publish(obj, lambda p: {"sessions": 2})
    assert publisher.previous(obj) == {"runtimeReplicas": "1/1", "sessions": 2, "conditions": []}
    assert not await publisher.publish(obj, lambda p: {"runtimeReplicas": "1/1"})
    assert len(recorder.patches) == 2
    # A condition another writer wrote beats the stale view of it; one never written is kept.
    soak = {"type": "SoakPassing", "status": "True"}
    await publisher.publish(obj, lambda p: {"conditions": [*p["conditions"], soak]})
    other = {"type": "Other", "status": "True"}
    obj["status"] = {"conditions": [{"type": "SoakPassing", "status": "Unknown"}, other]}
    assert publisher.previous(obj)["conditions"] == [soak, other]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_scos_reads_count_failures_and_never_make_an_empty_pod() -> None:
    good = scos(3).to_json()

    def answer(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "10.0.0.4":
            raise httpx.ConnectError("refused", request=request)
        if host == "10.0.0.5":
            raise httpx.ReadTimeout("slow", request=request)
        if request.url.path == "/v1/drain":
            return httpx.Response(409 if request.method == "DELETE" else 200, json={})
        body = {"10.0.0.1": good, "10.0.0.2": good, "10.0.0.3": "{}"}[host]
        return httpx.Response(503 if host == "10.0.0.2" else 200, text=body)

    failures = [f.value for f in ScrapeFailure]
    before = {f: sample("parley_operator_scos_scrape_failures_total", reason=f) for f in failures}
    scrapes = sample("parley_operator_scos_scrapes_total")
    ips = {name: f"10.0.0.{i}" for i, name in enumerate("abcde", start=1)}
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        reads = await read_all(http, ips, timeout_s=1)
        assert await set_draining(http, "10.0.0.1", True, 1)
        assert not await set_draining(http, "10.0.0.1", False, 1)  # 409: terminating
        assert not await set_draining(http, "10.0.0.4", True, 1)
    assert reads["a"].scos is not None and reads["a"].scos.sessions.active == 3
    assert {n: (r.scos, r.failure) for n, r in reads.items() if n != "a"} == {
        "b": (None, ScrapeFailure.STATUS),
        "c": (None, ScrapeFailure.INVALID),
        "d": (None, ScrapeFailure.CONNECT),
        "e": (None, ScrapeFailure.TIMEOUT),
    }
    assert sample("parley_operator_scos_scrapes_total") == scrapes + 5
    assert {
        f: sample("parley_operator_scos_scrape_failures_total", reason=f) - before[f]
        for f in failures
    } == dict.fromkeys(failures, 1.0)
    assert pod_url("fd00::7", "/v1/scos") == "http://[fd00::7]:8080/v1/scos"


async def test_measured_handlers_count_runs_errors_and_time() -> None:
    @metrics.measured("unit")
    async def fine() -> int:
        return 1

    @metrics.measured("unit")
    async def broken() -> None:
        raise RuntimeError("no")

    runs = sample("parley_operator_reconciles_total", kind="unit")
    assert await fine() == 1
    with pytest.raises(RuntimeError):
        await broken()
    assert sample("parley_operator_reconciles_total", kind="unit") == runs + 2
    assert sample("parley_operator_reconcile_errors_total", kind="unit") == 1
    assert sample("parley_operator_reconcile_duration_seconds_count", kind="unit") == runs + 2
    assert fine.__name__ == "fine"  # kopf names handlers after the function


def test_vram_caps_and_soak_results_are_gauges_a_deletion_removes() -> None:
    def cap(component: str) -> float | None:
        return REGISTRY.get_sample_value(
            "parley_operator_vram_cap_bytes",
            {"namespace": "ns", "voicedeployment": "vd", "component": component},
        )

    def soak() -> float | None:
        labels = {"namespace": "ns", "voicedeployment": "vd"}
        return REGISTRY.get_sample_value("parley_operator_soak_passing", labels)

    metrics.observe_vram_caps("ns", "vd", {"llm": 40.0, "tts": 2.5})
    assert (cap("llm"), cap("tts"), cap("runtime")) == (40 * 2**30, 2.5 * 2**30, None)
    metrics.observe_vram_caps("ns", "vd", {"llm": 40.0})  # the TTS went off the GPU
    assert cap("tts") is None and cap("llm") == 40 * 2**30
    assert soak() is None  # no result yet: no sample, not a failure
    metrics.observe_soak("ns", "vd", passed=False)
    assert soak() == 0
    metrics.observe_soak("ns", "vd", passed=True)
    assert soak() == 1
    metrics.forget("ns", "vd")
    assert (cap("llm"), soak()) == (None, None)
