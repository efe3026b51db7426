"""A finished soak run as the VoiceDeployment's status records it. Pure.

The run's result is the JSON summary `parley soak` wrote to its termination log (schema
`parley.soak/v1`, under 4 KiB), read from the pod's `state.terminated.message`. It becomes a
record in `status.soak.history` (newest first, `spec.soak.history` of them): run id, trigger,
start, duration, sessions, latency percentiles, turns, errors, error rate, rejections, cut
sessions, each criterion's limit and value, passed. A run that left no readable summary (the
client crashed, the Job hit its deadline or vanished, the message is not a summary) is recorded
as a harness failure: passed false, and `harnessError` saying what was found instead.

`SoakPassing` follows the newest record: Unknown while none exists, True when it passed, False
otherwise, with the first criterion it missed as the reason (TTFA, barge-in, error rate,
answered turns, in that order) and every one it missed in the message, or `HarnessFailed`.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from pydantic.alias_generators import to_camel

from parley_operator.conditions import ConditionType, Reason
from parley_operator.soak.jobs import CONTAINER
from parley_operator.status import Notice

Record = dict[str, Any]

SUMMARY_SCHEMA = "parley.soak/v1"
#: The kubelet keeps at most this much of a termination message.
MESSAGE_LIMIT_BYTES = 4096
#: Strings taken from a result (error text) are cut to this in status.
TEXT_LIMIT = 300
#: The soak's criteria (as its summary names them), in the order the reason picks from.
CRITERIA_REASONS = {
    "ttfa_p95_ms": Reason.TTFA_OVER_LIMIT,
    "barge_in_p95_ms": Reason.BARGE_IN_OVER_LIMIT,
    "error_rate": Reason.ERROR_RATE_OVER_LIMIT,
    "answered_turns": Reason.NO_TURN_ANSWERED,
}
_LABELS = {
    "ttfaP95Ms": ("TTFA p95", " ms"),
    "bargeInP95Ms": ("barge-in p95", " ms"),
    "errorRate": ("error rate", ""),
    "answeredTurns": ("answered turns", ""),
}
_LATENCY = {"ttfa": "ttfa", "barge_in": "bargeIn", "v2v": "v2v"}
MAX_CRITERIA = 8

# Event reasons.
PASSED = "SoakPassed"
FAILED = "SoakFailed"


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


# -- reading the result ----------------------------------------------------------------------


def termination_of(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The soak container's `state.terminated` among a Job's pods (the last to finish), or
    None when none has terminated (or the pods are gone)."""
    found = [
        status["state"]["terminated"]
        for pod in pods
        for status in (pod.get("status") or {}).get("containerStatuses") or []
        if status.get("name") == CONTAINER and (status.get("state") or {}).get("terminated")
    ]
    return max(found, key=lambda t: str(t.get("finishedAt") or ""), default=None)


def parse_summary(message: str) -> dict[str, Any]:
    """The soak's JSON summary; `ValueError` saying why a message is not one."""
    if len(message.encode()) > MESSAGE_LIMIT_BYTES:
        raise ValueError(f"the message is over {MESSAGE_LIMIT_BYTES} bytes")
    try:
        summary = json.loads(message)
    except ValueError:
        # With FallbackToLogsOnError this is the log's tail: its end says what went wrong.
        tail = message if len(message) <= 160 else "…" + message[-159:]
        raise ValueError(f"the message is not JSON: {tail!r}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("passed"), bool):
        raise ValueError("the message is not a soak summary (no verdict)")
    schema = summary.get("schema", SUMMARY_SCHEMA)
    if schema != SUMMARY_SCHEMA:
        raise ValueError(f"the summary's schema is {_cut(str(schema), 60)!r}, not {SUMMARY_SCHEMA}")
    return summary


def run_record(
    running: Record,
    terminated: dict[str, Any] | None,
    ended: dict[str, Any] | None,
    now: datetime.datetime,
) -> Record:
    """The history record of the run `running` (as `status.soak.running` describes it), from
    its container's `terminated` state and how its Job `ended` (None: the Job is gone)."""
    base = {
        key: running[key]
        for key in ("runId", "trigger", "job", "startedAt", "sessions", "generation")
        if key in running
    }
    message = (terminated or {}).get("message") or ""
    if message:
        try:
            return base | _from_summary(parse_summary(message))
        except ValueError as exc:
            problem = f"the soak's result is unreadable: {exc}"
    elif terminated:
        problem = (
            f"the soak exited with code {terminated.get('exitCode')} "
            f"({terminated.get('reason') or 'no reason'}) and wrote no result"
        )
    elif ended:
        problem = (
            f"the Job ended {ended['type']} ({ended['reason'] or 'no reason'}: "
            f"{ended['message'] or 'no message'}) and its pod left no result"
        )
    else:
        problem = "the Job disappeared before its result was read"
    finished = (
        parse_time(terminated["finishedAt"]) if terminated and terminated.get("finishedAt") else now
    )
    elapsed = (finished - parse_time(running["startedAt"])).total_seconds()
    return base | {
        "durationSeconds": round(max(0.0, elapsed), 1),
        "passed": False,
        "harnessError": _cut(problem),
    }


def _from_summary(summary: dict[str, Any]) -> Record:
    turns, connections = _dict(summary.get("turns")), _dict(summary.get("connections"))
    errors = _dict(summary.get("errors"))
    fields = {
        "passed": summary["passed"],
        "durationSeconds": _number(summary.get("elapsed_s")),
        "sessions": _integer(summary.get("sessions")),
        "turns": _integer(turns.get("attempted")),
        "errors": sum(v for v in errors.values() if isinstance(v, int)),
        "errorRate": _number(summary.get("error_rate")),
        "rejections": _integer(connections.get("rejected")),
        "cutSessions": _integer(connections.get("cut")),
        "latencyMs": _latency(_dict(summary.get("latency"))),
        "criteria": _criteria(_dict(summary.get("criteria"))),
    }
    if summary.get("harness_error"):
        fields["harnessError"] = _cut(str(summary["harness_error"]))
    return {key: value for key, value in fields.items() if value not in (None, {})}


def _latency(latency: dict[str, Any]) -> dict[str, Any]:
    """p50/p95 per metric, over the steady state when it has samples, else over all turns
    (the scope the soak's verdict uses)."""
    steady, everything = _dict(latency.get("steady")), _dict(latency.get("all"))
    found = {}
    for metric, key in _LATENCY.items():
        row = _dict(steady.get(metric))
        scope = "steady"
        if not _integer(row.get("n")):
            row, scope = _dict(everything.get(metric)), "all"
        if not _integer(row.get("n")):
            continue
        found[key] = {
            "p50": _number(row.get("p50_ms")),
            "p95": _number(row.get("p95_ms")),
            "samples": _integer(row.get("n")),
            "scope": scope,
        }
        found[key] = {k: v for k, v in found[key].items() if v is not None}
    return found


def _criteria(criteria: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name, result in list(criteria.items())[:MAX_CRITERIA]:
        row = _dict(result)
        entry = {
            "max": _number(row.get("max")),
            "min": _number(row.get("min")),
            "value": _number(row.get("value")),
            "passed": row.get("passed") if isinstance(row.get("passed"), bool) else None,
        }
        found[to_camel(_cut(str(name), 60))] = {k: v for k, v in entry.items() if v is not None}
    return found


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cut(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the verdict in status -------------------------------------------------------------------


def with_record(history: list[Record], record: Record, keep: int) -> list[Record]:
    """`record` first, then the older records (one per Job: recording a run twice is a no-op),
    `keep` in all."""
    older = [r for r in history if r.get("job") != record.get("job")]
    return [record, *older][:keep]


def verdict(record: Record | None) -> tuple[str, Reason, str]:
    """SoakPassing's status, reason and message for the newest record (None: no run yet)."""
    if record is None:
        return "Unknown", Reason.SOAK_NOT_RUN, "no soak run has finished yet"
    run = f"run {record.get('runId')}"
    if record.get("harnessError"):
        return (
            "False",
            Reason.HARNESS_FAILED,
            f"{run}: the soak harness failed: {record['harnessError']}",
        )
    criteria = record.get("criteria") or {}
    if record.get("passed"):
        checked = ", ".join(_describe(name, c) for name, c in criteria.items())
        return "True", Reason.SOAK_PASSED, f"{run} passed: {checked}"
    missed = [name for name, c in criteria.items() if c.get("passed") is False]
    if not missed:
        return "False", Reason.CRITERIA_NOT_MET, f"{run} did not pass"
    reasons = {to_camel(name): reason for name, reason in CRITERIA_REASONS.items()}
    first = next((n for n in reasons if n in missed), None)
    reason = reasons[first] if first else Reason.CRITERIA_NOT_MET
    detail = "; ".join(_describe(name, criteria[name]) for name in missed)
    return "False", reason, f"{run} failed: {detail}"


def _describe(name: str, criterion: dict[str, Any]) -> str:
    label, unit = _LABELS.get(name, (name, ""))
    value = criterion.get("value")
    shown = "no samples" if value is None else f"{value:g}{unit}"
    if "max" in criterion:
        return f"{label} {shown} (max {criterion['max']:g}{unit})"
    if "min" in criterion:
        return f"{label} {shown} (min {criterion['min']:g}{unit})"
    return f"{label} {shown}"


def result_notice(record: Record) -> Notice:
    """The Event posted when a run's result is recorded."""
    status, _, message = verdict(record)
    if status == "True":
        return Notice("Normal", PASSED, message)
    return Notice("Warning", FAILED, message)


def soak_condition(
    history: list[Record], previous: list[dict[str, Any]], now: datetime.datetime
) -> dict[str, Any]:
    """SoakPassing from the newest record; its `lastTransitionTime` moves only when its status
    does, and its `observedGeneration` is the generation the run measured."""
    newest = history[0] if history else None
    status, reason, message = verdict(newest)
    before = next((c for c in previous if c.get("type") == ConditionType.SOAK_PASSING), None)
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == status and before.get("lastTransitionTime")
        else timestamp(now)
    )
    condition = {
        "type": ConditionType.SOAK_PASSING.value,
        "status": status,
        "reason": reason.value,
        "message": message,
        "lastTransitionTime": since,
    }
    if newest is not None and isinstance(newest.get("generation"), int):
        condition["observedGeneration"] = newest["generation"]
    return condition


def soak_status(previous: dict[str, Any], soak: Record, now: datetime.datetime) -> dict[str, Any]:
    """The status patch that makes `status.soak` equal `soak` and SoakPassing follow it (no
    `soak` at all while there is nothing to say)."""
    conditions = list(previous.get("conditions") or [])
    condition = soak_condition(soak.get("history") or [], conditions, now)
    spliced = [condition if c.get("type") == condition["type"] else c for c in conditions]
    if condition not in spliced:
        spliced.append(condition)
    if not soak and "soak" not in previous:
        return {"conditions": spliced}
    return {"soak": merge_patch(previous.get("soak") or {}, soak), "conditions": spliced}


def merge_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `before` into `after`: `after`, with null for every key
    that `before` has and `after` has not, in nested objects too. Applied to its own result it
    changes nothing, so writing it twice is a no-op (and compares equal)."""
    patch = {
        key: merge_patch(before[key], value)
        if isinstance(value, dict) and isinstance(before.get(key), dict)
        else value
        for key, value in after.items()
    }
    return patch | {key: None for key in before if key not in after}
