"""Soak tests without a cluster: the Job a run becomes, when a cron slot is due, what a soak's
termination message becomes in status, and which run starts, waits or is refused."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from parley_bench.soak import Criteria as SoakCriteria
from parley_bench.soak import Tally, fit_summary, verdict
from parley_operator.api import VoiceDeployment, crd
from parley_operator.render import container_security, owner_reference, pod_security
from parley_operator.soak import runs, schedule
from parley_operator.soak.jobs import (
    ON_DEMAND,
    SCHEDULED,
    Run,
    criteria,
    is_job_of,
    job_name,
    job_view,
    soak_job,
)
from parley_operator.soak.results import (
    merge_patch,
    run_record,
    soak_condition,
    soak_status,
    termination_of,
    with_record,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
T0 = datetime.datetime(2026, 3, 2, 10, 0, 0, tzinfo=datetime.UTC)


def voice_deployment(
    soak: dict[str, Any] | None = None, name: str = "cpu-agent", generation: int = 3
) -> VoiceDeployment:
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / "cpu.yaml").read_text())
    manifest["metadata"] = {
        "name": name,
        "namespace": "ns",
        "uid": "uid-1",
        "generation": generation,
    }
    manifest["spec"]["soak"] = soak or {}
    return VoiceDeployment.model_validate(manifest)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


# -- the Job ---------------------------------------------------------------------------------


def test_the_job_runs_parley_soak_against_the_runtime_service_with_the_criteria() -> None:
    vd = voice_deployment({"sessions": 6, "durationSeconds": 120, "dutyCycle": 0.5})
    job = soak_job(vd, Run("release-42", ON_DEMAND, 3))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["parley", "soak"]
    assert container["args"] == [
        "--target", "http://cpu-agent-runtime.ns.svc:8080",
        "--sessions", "6",
        "--duration", "120s",
        "--duty-cycle", "0.5",
        "--max-ttfa-p95-ms", "250",  # spec.slo's
        "--max-barge-in-p95-ms", "150",
        "--max-error-rate", "0.05",
        "--result-file", "/dev/termination-log",
        "--token-file", "/var/run/secrets/parley/token",
    ]  # fmt: skip
    assert container["image"] == vd.spec.runtime.image
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_criteria_default_to_the_slo_and_can_be_set_apart() -> None:
    assert criteria(voice_deployment().spec) == (
        criteria(voice_deployment({"maxTtfaP95Ms": 250, "maxBargeInP95Ms": 150}).spec)
    )
    vd = voice_deployment({"maxTtfaP95Ms": 900, "maxErrorRate": 0.2, "image": "parley:soak"})
    job = soak_job(vd, Run("x", ON_DEMAND, 1))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--max-ttfa-p95-ms") + 1] == "900"
    assert args[args.index("--max-barge-in-p95-ms") + 1] == "150"
    assert args[args.index("--max-error-rate") + 1] == "0.2"
    assert container["image"] == "parley:soak"


def test_the_job_runs_once_expires_and_is_bounded_in_time() -> None:
    vd = voice_deployment({"durationSeconds": 300, "ttlSecondsAfterFinished": 7200})
    spec = soak_job(vd, Run("x", ON_DEMAND, 1))["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 7200
    assert spec["activeDeadlineSeconds"] == 300 + 600
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_the_job_has_the_pods_usual_security() -> None:
    pod = soak_job(voice_deployment(), Run("x", ON_DEMAND, 1))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"] == pod_security()
    assert container["securityContext"] == container_security(read_only_root=True)
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/var/cache/parley", "/var/run/secrets/parley"}
    assert mounts["/var/run/secrets/parley"]["readOnly"] is True
    # Scratch space, and the runtime's admin token (its load is one client: not rate-limited).
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/run/secrets/parley"]["name"]]["secret"] == {
        "secretName": "cpu-agent-runtime-admin",
        "defaultMode": 0o440,
    }
    assert all(
        "emptyDir" in volumes[m["name"]]
        for m in mounts.values()
        if m["mountPath"] != "/var/run/secrets/parley"
    )
    assert "nodeSelector" not in pod
    assert {"name": "XDG_CACHE_HOME", "value": "/var/cache/parley"} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}


def test_the_job_is_tied_to_its_voice_deployment_and_run() -> None:
    vd = voice_deployment({"nodeSelector": {"pool": "load"}})
    job = soak_job(vd, Run("release-42", ON_DEMAND, 3))
    meta = job["metadata"]
    assert meta["name"] == "cpu-agent-soak-3" and meta["namespace"] == "ns"
    assert meta["ownerReferences"] == [owner_reference(vd)]
    assert meta["annotations"] == {
        "parley.dev/soak-run-id": "release-42",
        "parley.dev/soak-trigger": "OnDemand",
    }
    assert meta["labels"]["parley.dev/voicedeployment"] == "cpu-agent"
    assert meta["labels"]["app.kubernetes.io/component"] == "soak"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "parley-operator"
    assert meta["labels"]["parley.dev/soak-run"] == "3"
    assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]
    # Not the runtime's pods: its Service and PodDisruptionBudget must not select them.
    assert meta["labels"]["app.kubernetes.io/name"] == "parley-soak"
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "load"}
    assert is_job_of(job, Run("release-42", ON_DEMAND, 3))
    assert not is_job_of(job, Run("release-43", ON_DEMAND, 3))


def test_a_long_name_gets_a_job_name_that_fits_and_stays_apart() -> None:
    long_a, long_b = "a" * 50 + "-east", "a" * 50 + "-west"
    name_a = job_name(voice_deployment(name=long_a), 12345)
    name_b = job_name(voice_deployment(name=long_b), 12345)
    assert len(name_a) <= 63 and len(name_b) <= 63
    assert name_a != name_b and name_a.endswith("-soak-12345")


def test_the_watch_keeps_a_jobs_name_and_how_it_ended() -> None:
    job = soak_job(voice_deployment(), Run("x", ON_DEMAND, 1))
    assert job_view(job) == {"name": "cpu-agent-soak-1", "ended": None}
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "m"}
    job["status"] = {"conditions": [{"type": "FailureTarget", "status": "True"}, failed]}
    assert job_view(job)["ended"] == {
        "type": "Failed",
        "reason": "DeadlineExceeded",
        "message": "m",
    }


# -- the schedule ----------------------------------------------------------------------------


def test_a_slot_is_due_once_the_clock_has_passed_it() -> None:
    last = schedule.latest_slot("0 3 * * *", T0)
    assert last == datetime.datetime(2026, 3, 2, 3, 0, tzinfo=datetime.UTC)
    assert schedule.due_slot("0 3 * * *", last, T0) is None
    tomorrow = datetime.datetime(2026, 3, 3, 3, 0, tzinfo=datetime.UTC)
    assert schedule.next_slot("0 3 * * *", last) == tomorrow
    assert schedule.due_slot("0 3 * * *", last, tomorrow - datetime.timedelta(seconds=1)) is None
    assert schedule.due_slot("0 3 * * *", last, tomorrow) == tomorrow


def test_after_missed_slots_only_the_latest_is_due() -> None:
    last = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
    assert schedule.due_slot("*/5 * * * *", last, at(17 * 60 + 30)) == at(15 * 60)


def test_macros_are_schedules() -> None:
    assert schedule.latest_slot("@hourly", at(59)) == T0


@pytest.mark.parametrize("expression", ["61 * * * *", "* * *", "0 3 * * FUNDAY"])
def test_an_invalid_cron_is_a_clear_error(expression: str) -> None:
    with pytest.raises(schedule.InvalidSchedule, match=re.escape(f"soak.schedule '{expression}'")):
        schedule.latest_slot(expression, T0)


# -- a run's result --------------------------------------------------------------------------


LIMITS = SoakCriteria(max_ttfa_p95_ms=250, max_barge_in_p95_ms=150, max_error_rate=0.5)


def summary(
    ttfa_ms: float = 180.0, limits: SoakCriteria = LIMITS, harness_error: str | None = None
) -> dict[str, Any]:
    """A summary as `parley soak` builds it (its own tally, verdict and size cap)."""
    tally = Tally()
    for _ in range(6):
        tally.add("ttfa", ttfa_ms, steady=True)
        tally.add("v2v", ttfa_ms + 400, steady=True)
    tally.add("barge_in", 90.0, steady=False)
    tally.outcomes.update(answered=6, interrupted=1, error=1)
    tally.errors.update(turn_deadline=1, connect_failed=1)
    tally.connections.update(opened=2, rejected=3, failed=1, cut=1)
    latency = tally.latency()
    results, passed = verdict(limits, latency, tally.error_rate(), 7)
    built = {
        "schema": "parley.soak/v1",
        "started_at": "2026-03-02T10:00:05Z",
        "sessions": 2,
        "duration_s": 20,
        "elapsed_s": 21.4,
        "turns": {"attempted": tally.attempted, **tally.outcomes},
        "latency": latency,
        "errors": dict(tally.errors),
        "error_rate": tally.error_rate(),
        "connections": dict(tally.connections),
        "criteria": results,
        "passed": passed and harness_error is None,
        "harness_error": harness_error,
    }
    return json.loads(fit_summary(built))


RUNNING = {
    "runId": "release-42",
    "trigger": "OnDemand",
    "job": "cpu-agent-soak-3",
    "startedAt": "2026-03-02T10:00:00Z",
    "sessions": 2,
    "durationSeconds": 20,
    "generation": 3,
}


def terminated(message: str, exit_code: int = 0) -> dict[str, Any]:
    return {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "message": message,
        "finishedAt": "2026-03-02T10:00:40Z",
    }


COMPLETE = {"type": "Complete", "reason": "", "message": ""}


def test_a_passed_run_is_recorded_with_its_numbers() -> None:
    record = run_record(RUNNING, terminated(json.dumps(summary())), COMPLETE, at(41))
    assert record["runId"] == "release-42" and record["trigger"] == "OnDemand"
    assert record["job"] == "cpu-agent-soak-3" and record["startedAt"] == "2026-03-02T10:00:00Z"
    assert record["passed"] is True
    assert record["sessions"] == 2 and record["durationSeconds"] == 21.4
    assert record["turns"] == 8 and record["errors"] == 2
    assert record["rejections"] == 3 and record["cutSessions"] == 1
    assert record["errorRate"] == pytest.approx(2 / 9, abs=1e-3)
    assert record["latencyMs"]["ttfa"] == {
        "p50": 180.0,
        "p95": 180.0,
        "samples": 6,
        "scope": "steady",
    }
    assert record["latencyMs"]["bargeIn"]["scope"] == "all"  # no steady-state sample
    assert record["criteria"]["ttfaP95Ms"] == {"max": 250, "value": 180.0, "passed": True}
    assert record["criteria"]["answeredTurns"] == {"min": 1, "value": 7, "passed": True}
    assert "harnessError" not in record
    status, reason, message = soak_verdict(record)
    assert (status, reason) == ("True", "SoakPassed")
    assert message.startswith("run release-42 passed: TTFA p95 180 ms (max 250 ms)")


def soak_verdict(record: dict[str, Any] | None) -> tuple[str, str, str]:
    condition = soak_condition([record] if record else [], [], T0)
    return condition["status"], condition["reason"], condition["message"]


def test_a_missed_criterion_is_false_with_the_criterion_as_the_reason() -> None:
    message = json.dumps(summary(ttfa_ms=412.3, limits=SoakCriteria(250, 150, 0.5)))
    record = run_record(RUNNING, terminated(message), COMPLETE, at(41))
    assert record["passed"] is False
    status, reason, text = soak_verdict(record)
    assert (status, reason) == ("False", "TTFAOverLimit")
    assert text == "run release-42 failed: TTFA p95 412.3 ms (max 250 ms)"


def test_several_missed_criteria_name_the_first_and_list_all() -> None:
    message = json.dumps(summary(ttfa_ms=412.3, limits=SoakCriteria(250, 50, 0.01)))
    record = run_record(RUNNING, terminated(message), COMPLETE, at(41))
    status, reason, text = soak_verdict(record)
    assert (status, reason) == ("False", "TTFAOverLimit")
    assert "TTFA p95 412.3 ms" in text and "barge-in p95 90 ms (max 50 ms)" in text
    assert "error rate 0.2222 (max 0.01)" in text


def test_a_harness_failure_is_false_with_harness_failed() -> None:
    message = json.dumps(summary(harness_error="target http://x unreachable"))
    record = run_record(RUNNING, terminated(message, exit_code=2), COMPLETE, at(41))
    assert record["passed"] is False and record["harnessError"] == "target http://x unreachable"
    status, reason, text = soak_verdict(record)
    assert (status, reason) == ("False", "HarnessFailed")
    assert "target http://x unreachable" in text


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("Traceback (most recent call last):\n" * 20 + "ImportError: no aiortc", "no aiortc"),
        ('{"schema": "parley.soak/v1"}', "not a soak summary"),
        ('["passed"]', "not a soak summary"),
        ('{"schema": "parley.soak/v9", "passed": true}', "schema is 'parley.soak/v9'"),
        (json.dumps({"passed": True, "pad": "x" * 5000}), "over 4096 bytes"),
    ],
)
def test_a_message_that_is_no_summary_is_a_harness_failure(message: str, why: str) -> None:
    record = run_record(RUNNING, terminated(message, exit_code=1), COMPLETE, at(41))
    assert record["passed"] is False
    assert record["harnessError"].startswith("the soak's result is unreadable")
    assert why in record["harnessError"]
    assert len(record["harnessError"]) <= 300
    assert record["durationSeconds"] == 40.0
    assert soak_verdict(record)[1] == "HarnessFailed"


def test_no_message_at_all_says_what_happened_instead() -> None:
    oom = {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-03-02T10:00:30Z"}
    assert "code 137 (OOMKilled)" in run_record(RUNNING, oom, COMPLETE, at(41))["harnessError"]
    deadline = {"type": "Failed", "reason": "DeadlineExceeded", "message": "too long"}
    text = run_record(RUNNING, None, deadline, at(920))["harnessError"]
    assert "Failed (DeadlineExceeded: too long)" in text
    assert "disappeared" in run_record(RUNNING, None, None, at(920))["harnessError"]


def test_the_result_is_read_from_the_soak_containers_last_termination() -> None:
    def pod(name: str, state: dict[str, Any]) -> dict[str, Any]:
        return {"status": {"containerStatuses": [{"name": name, "state": state}]}}

    first = {"terminated": {"message": "a", "finishedAt": "2026-03-02T10:00:10Z"}}
    last = {"terminated": {"message": "b", "finishedAt": "2026-03-02T10:00:20Z"}}
    pods = [pod("soak", first), pod("soak", last), pod("sidecar", last), pod("soak", {})]
    assert termination_of(pods) == last["terminated"]
    assert termination_of([pod("soak", {"running": {}})]) is None
    assert termination_of([]) is None


def test_history_keeps_the_newest_runs_once_each() -> None:
    records = [{"job": f"j{i}", "runId": str(i)} for i in range(5)]
    history: list[dict[str, Any]] = []
    for record in records:
        history = with_record(history, record, keep=3)
    assert [r["job"] for r in history] == ["j4", "j3", "j2"]
    assert with_record(history, {"job": "j4", "runId": "again"}, keep=3)[1:] == history[1:]


def test_no_run_yet_is_unknown() -> None:
    assert soak_verdict(None)[:2] == ("Unknown", "SoakNotRun")


def test_the_condition_moves_its_transition_time_only_on_transitions() -> None:
    passed = run_record(RUNNING, terminated(json.dumps(summary())), COMPLETE, at(41))
    first = soak_condition([passed], [], at(41))
    assert first["lastTransitionTime"] == "2026-03-02T10:00:41Z"
    assert first["observedGeneration"] == 3
    again = soak_condition([{**passed, "runId": "next"}], [first], at(900))
    assert again["lastTransitionTime"] == first["lastTransitionTime"]
    failed = {**passed, "passed": False, "harnessError": "x"}
    assert soak_condition([failed], [again], at(1000))["lastTransitionTime"] == (
        "2026-03-02T10:16:40Z"
    )


# -- status ----------------------------------------------------------------------------------


def test_the_status_is_a_merge_patch_that_removes_what_ended_and_is_idempotent() -> None:
    before = {"running": {"runId": "a"}, "schedule": {"expression": "x", "error": "bad"}}
    after = {"schedule": {"expression": "y", "lastSlot": "t"}}
    patch = merge_patch(before, after)
    assert patch == {
        "running": None,
        "schedule": {"expression": "y", "lastSlot": "t", "error": None},
    }
    assert merge_patch(patch, after) == patch  # written once: the same patch, no change
    assert merge_patch(after, after) == after  # as the apiserver stores it (nulls removed)


def test_the_status_splices_soak_passing_among_the_other_conditions() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "AllReplicasReady"}
    status = soak_status({"conditions": [ready]}, {"runs": 1}, T0)
    assert [c["type"] for c in status["conditions"]] == ["Ready", "SoakPassing"]
    again = soak_status({**status, "soak": status["soak"]}, {"runs": 1}, at(60))
    assert again == status
    # A VoiceDeployment that never soaked gets the condition and no empty `soak`.
    assert soak_status({"conditions": [ready]}, {}, T0) == {"conditions": status["conditions"]}


def test_every_status_field_is_in_the_crds_status_schema() -> None:
    """What the apiserver does not know it prunes: a field missing from the schema would be
    written again after every restart."""
    vd = voice_deployment({"schedule": "*/5 * * * *"})
    step = runs.advance(vd, {}, trigger="a", runtime_ready=True, job=None, terminated=None, now=T0)
    record = run_record(RUNNING, terminated(json.dumps(summary())), COMPLETE, at(41))
    state = step.state | {"history": [record, {**RUNNING, "passed": False, "harnessError": "x"}]}
    state |= {"queued": {"runId": "b", "trigger": "OnDemand", "queuedAt": "2026-03-02T10:00:00Z"}}
    status = soak_status({}, state, T0)
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert conforms(status, root["properties"]["status"], "status") == []


def conforms(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Where `value` strays from a structural schema: unknown keys and wrong types."""
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool}
    kind = schema["type"]
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kinds[kind])
    if not ok:
        return [f"{path}: {value!r} is not {kind}"]
    problems = []
    if kind == "object":
        for key, item in value.items():
            known = schema.get("properties", {}).get(key) or schema.get("additionalProperties")
            if not known:
                problems.append(f"{path}.{key}: not in the schema")
            elif item is not None:
                problems += conforms(item, known, f"{path}.{key}")
    if kind == "array":
        for i, item in enumerate(value):
            problems += conforms(item, schema["items"], f"{path}[{i}]")
    return problems


# -- which run starts ------------------------------------------------------------------------


def step(
    state: dict[str, Any],
    *,
    trigger: str | None = None,
    ready: bool = True,
    job: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
    now: datetime.datetime = T0,
    soak: dict[str, Any] | None = None,
) -> runs.Step:
    return runs.advance(
        voice_deployment(soak),
        state,
        trigger=trigger,
        runtime_ready=ready,
        job=job,
        terminated=result,
        now=now,
    )


def reasons(done: runs.Step) -> list[str]:
    return [notice.reason for notice in done.notices]


def test_a_new_annotation_value_starts_exactly_one_run() -> None:
    first = step({}, trigger="release-42")
    assert first.start == Run("release-42", ON_DEMAND, 1)
    assert first.state["running"] == {
        "runId": "release-42",
        "trigger": "OnDemand",
        "job": "cpu-agent-soak-1",
        "startedAt": "2026-03-02T10:00:00Z",
        "sessions": 4,
        "durationSeconds": 300,
        "generation": 3,
    }
    assert first.state["lastTrigger"] == "release-42" and first.state["runs"] == 1
    assert reasons(first) == ["SoakStarted"]
    # The same value, seen again and again (every event, every tick), starts nothing.
    running_job = {"name": "cpu-agent-soak-1", "ended": None}
    again = step(first.state, trigger="release-42", job=running_job, now=at(30))
    assert again.start is None and again.state == first.state and again.notices == ()


def test_the_same_value_never_restarts_after_its_run() -> None:
    first = step({}, trigger="a")
    done = step(
        first.state,
        trigger="a",
        job={"name": "cpu-agent-soak-1", "ended": COMPLETE},
        result=terminated(json.dumps(summary())),
        now=at(400),
    )
    assert done.start is None and "running" not in done.state
    assert reasons(done) == ["SoakPassed"]
    assert done.state["history"][0]["runId"] == "a"
    assert step(done.state, trigger="a", now=at(500)) == runs.Step(done.state)


def test_a_trigger_during_a_run_is_queued_and_starts_after_it() -> None:
    first = step({}, trigger="a")
    running_job = {"name": "cpu-agent-soak-1", "ended": None}
    queued = step(first.state, trigger="b", job=running_job, now=at(10))
    assert queued.start is None
    assert queued.state["running"]["runId"] == "a"
    assert queued.state["queued"] == {
        "runId": "b",
        "trigger": "OnDemand",
        "queuedAt": "2026-03-02T10:00:10Z",
    }
    assert reasons(queued) == ["SoakQueued"]
    assert "waiting for run 'a' to end" in queued.notices[0].message
    # A third value while one waits is refused, not lost silently: an Event says so.
    refused = step(queued.state, trigger="c", job=running_job, now=at(20))
    assert refused.state["queued"]["runId"] == "b" and refused.state["lastTrigger"] == "c"
    assert reasons(refused) == ["SoakRefused"] and "'b' is queued" in refused.notices[0].message
    ended = {"name": "cpu-agent-soak-1", "ended": COMPLETE}
    after = step(refused.state, trigger="c", job=ended, result=terminated("{}"), now=at(400))
    assert after.start == Run("b", ON_DEMAND, 2)
    assert after.state["running"]["job"] == "cpu-agent-soak-2" and "queued" not in after.state
    assert reasons(after) == ["SoakFailed", "SoakStarted"]
    assert after.state["history"][0]["runId"] == "a"


def test_a_run_waits_for_a_ready_runtime() -> None:
    waiting = step({}, trigger="a", ready=False)
    assert waiting.start is None and waiting.state["queued"]["runId"] == "a"
    assert "waiting for a ready runtime pod" in waiting.notices[0].message
    assert step(waiting.state, trigger="a", ready=True).start == Run("a", ON_DEMAND, 1)


def test_an_overlong_run_id_is_refused_once() -> None:
    refused = step({}, trigger="x" * 64)
    assert refused.start is None and reasons(refused) == ["SoakRefused"]
    assert step(refused.state, trigger="x" * 64).notices == ()


def test_a_job_not_seen_yet_is_still_starting_and_one_gone_is_a_harness_failure() -> None:
    first = step({}, trigger="a")
    assert step(first.state, trigger="a", now=at(30)).state == first.state
    gone = step(first.state, trigger="a", now=at(120))
    assert "running" not in gone.state
    assert gone.state["history"][0]["harnessError"] == (
        "the Job disappeared before its result was read"
    )
    assert reasons(gone) == ["SoakFailed"]


def test_a_job_the_apiserver_refuses_is_the_runs_result() -> None:
    vd = voice_deployment()
    started = runs.advance(
        vd, {}, trigger="a", runtime_ready=True, job=None, terminated=None, now=T0
    )
    failed = runs.start_failed(vd, started, "the apiserver refused the Job: 403 quota", T0)
    assert failed.start is None and "running" not in failed.state
    assert failed.state["lastTrigger"] == "a" and failed.state["runs"] == 1
    assert failed.state["history"][0]["harnessError"] == "the apiserver refused the Job: 403 quota"
    assert reasons(failed) == ["SoakFailed"]


EVERY_5_MIN = {"schedule": "*/5 * * * *"}


def test_a_new_schedule_owes_no_past_slot_and_runs_the_next() -> None:
    first = step({}, soak=EVERY_5_MIN, now=at(61))
    assert first.start is None and first.notices == ()
    assert first.state["schedule"] == {
        "expression": "*/5 * * * *",
        "lastSlot": "2026-03-02T10:00:00Z",
        "nextSlot": "2026-03-02T10:05:00Z",
    }
    assert step(first.state, soak=EVERY_5_MIN, now=at(299)).state == first.state
    due = step(first.state, soak=EVERY_5_MIN, now=at(301))
    assert due.start == Run("scheduled-20260302T1005Z", SCHEDULED, 1)
    assert due.state["schedule"]["lastSlot"] == "2026-03-02T10:05:00Z"
    assert due.state["running"]["trigger"] == "Scheduled"


def test_a_slot_during_a_run_is_skipped_with_an_event() -> None:
    first = step({}, soak=EVERY_5_MIN, trigger="a", now=at(61))
    running_job = {"name": "cpu-agent-soak-1", "ended": None}
    skipped = step(first.state, soak=EVERY_5_MIN, trigger="a", job=running_job, now=at(301))
    assert skipped.start is None and skipped.state["running"]["runId"] == "a"
    assert reasons(skipped) == ["SoakSkipped"]
    assert skipped.state["schedule"]["lastSlot"] == "2026-03-02T10:05:00Z"


def test_an_invalid_schedule_is_reported_once_and_runs_nothing() -> None:
    bad = {"schedule": "61 * * * *"}
    first = step({}, soak=bad)
    assert reasons(first) == ["SoakScheduleInvalid"]
    assert "is not a valid cron" in first.state["schedule"]["error"]
    later = step(first.state, soak=bad, now=at(3600))
    assert later.state == first.state and later.notices == ()
    fixed = step(later.state, soak=EVERY_5_MIN, now=at(3600))
    assert "error" not in fixed.state["schedule"]


def test_the_clock_visits_only_what_has_something_to_do() -> None:
    def view(spec: dict[str, Any], soak_status: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"soak": spec}, "status": {"soak": soak_status}}

    assert not runs.wants_clock(view({}, {}), None)
    assert not runs.wants_clock(view({}, {"lastTrigger": "a"}), "a")
    assert runs.wants_clock(view({}, {"lastTrigger": "a"}), "b")
    assert runs.wants_clock(view(EVERY_5_MIN, {}), None)
    assert runs.wants_clock(view({}, {"running": {"runId": "a"}}), None)
    assert runs.wants_clock(view({}, {"queued": {"runId": "a"}}), None)
