"""Which soak runs start, wait or are refused, and when a run is over. Pure: the clock, the
trigger annotation, the Jobs and the pod's result are arguments.

`status.soak` is the whole memory (so an operator restart carries on where it was):

- `running`: the run whose Job is running (run id, trigger, Job, start, sessions, duration).
  One at a time per VoiceDeployment. The autoscaler reads it: while it is set, a scale-down
  must not cut the sessions the soak is measuring.
- `queued`: one run waiting for the running one to end, or for the runtime to have a ready
  pod. An on-demand trigger that finds both slots taken is refused with an Event.
- `lastTrigger`: the last value of the `parley.dev/soak-now` annotation handled (started,
  queued or refused), so that a value starts exactly one run, whatever the operator sees again.
- `runs`: how many runs were started; the next one's Job is `<vd>-soak-<runs + 1>`.
- `schedule`: the cron expression, the last slot handled and the next one (or the error).
- `history`: the records of finished runs, newest first.

A scheduled slot that comes while a run is running, queued or cannot start (no ready runtime)
is skipped with an Event, as a CronJob with `concurrencyPolicy: Forbid` would.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from parley_operator.api import VoiceDeployment
from parley_operator.soak import schedule
from parley_operator.soak.jobs import ON_DEMAND, SCHEDULED, Run, job_name
from parley_operator.soak.results import (
    Record,
    parse_time,
    result_notice,
    run_record,
    timestamp,
    with_record,
)
from parley_operator.status import Notice

#: A running run's Job may be missing from the watch this long after it was created (the
#: watch lags the create); after that, missing means deleted.
JOB_APPEARS_WITHIN_S = 60
MAX_RUN_ID = 63

# Event reasons.
STARTED = "SoakStarted"
QUEUED = "SoakQueued"
REFUSED = "SoakRefused"
SKIPPED = "SoakSkipped"
SCHEDULE_INVALID = "SoakScheduleInvalid"


@dataclass(frozen=True)
class Step:
    """The next `status.soak`, the run whose Job to create (if any), and the Events to post
    once the status is written."""

    state: Record
    start: Run | None = None
    notices: tuple[Notice, ...] = field(default=())


def wants_clock(view: dict[str, Any], trigger: str | None) -> bool:
    """Whether the clock has anything to do for a VoiceDeployment (as last seen): a schedule,
    a run going or waiting, or a trigger not handled yet (its step failed)."""
    state = (view.get("status") or {}).get("soak") or {}
    schedule_set = ((view.get("spec") or {}).get("soak") or {}).get("schedule")
    unhandled = (trigger or "").strip() not in ("", state.get("lastTrigger"))
    return bool(schedule_set or state.get("running") or state.get("queued") or unhandled)


def running_job_name(state: Record) -> str | None:
    """The Job of the running run, whose end the adapter watches for."""
    running = state.get("running")
    return running.get("job") if running else None


def advance(
    vd: VoiceDeployment,
    state: Record,
    *,
    trigger: str | None,
    runtime_ready: bool,
    job: dict[str, Any] | None,
    terminated: dict[str, Any] | None,
    now: datetime.datetime,
) -> Step:
    """The next step from `state` (`status.soak`). `trigger`: the annotation's value. `job`:
    the running run's Job as the watch shows it (`jobs.job_view`), None if it is not there;
    `terminated`: its pod's terminated state, read once the Job has ended."""
    notices: list[Notice] = []
    history: list[Record] = list(state.get("history") or [])
    running, queued = state.get("running"), state.get("queued")
    last_trigger = state.get("lastTrigger")

    if running is not None and _over(running, job, now):
        ended = job["ended"] if job else None
        record = run_record(running, terminated, ended, now)
        history = with_record(history, record, vd.spec.soak.history)
        notices.append(result_notice(record))
        running = None

    value = (trigger or "").strip()
    if value and value != last_trigger:
        last_trigger = value
        refusal = _refusal(value, queued)
        if refusal:
            notices.append(Notice("Warning", REFUSED, f"soak run {value!r} refused: {refusal}"))
        else:
            queued = {"runId": value, "trigger": ON_DEMAND, "queuedAt": timestamp(now)}

    cron, slot, invalid = _schedule(vd.spec.soak.schedule, state.get("schedule"), now)
    if invalid:
        notices.append(Notice("Warning", SCHEDULE_INVALID, invalid))
    if slot is not None:
        run_id = f"scheduled-{slot:%Y%m%dT%H%MZ}"
        if running is None and queued is None and runtime_ready:
            queued = {"runId": run_id, "trigger": SCHEDULED, "queuedAt": timestamp(now)}
        else:
            busy = "another run is running or queued" if running or queued else "no ready runtime"
            notices.append(Notice("Normal", SKIPPED, f"scheduled soak {run_id} skipped: {busy}"))

    start, number = None, int(state.get("runs", 0))
    if queued is not None and running is None and runtime_ready:
        number += 1
        start = Run(queued["runId"], queued["trigger"], number)
        running = _running(vd, start, now)
        notices.append(
            Notice("Normal", STARTED, f"soak run {start.run_id!r} started: Job {running['job']}")
        )
        queued = None
    elif queued is not None and queued != state.get("queued"):
        waiting = f"run {running['runId']!r} to end" if running else "a ready runtime pod"
        notices.append(
            Notice("Normal", QUEUED, f"soak run {queued['runId']!r} queued: waiting for {waiting}")
        )

    fields = {
        "runs": number or None,
        "lastTrigger": last_trigger,
        "running": running,
        "queued": queued,
        "schedule": cron,
        "history": history[: vd.spec.soak.history] or None,
    }
    return Step({k: v for k, v in fields.items() if v is not None}, start, tuple(notices))


def start_failed(vd: VoiceDeployment, step: Step, problem: str, now: datetime.datetime) -> Step:
    """`step` after its Job could not be created: the run is recorded as a harness failure
    (it is not retried: the next trigger or slot is a new run)."""
    running = step.state["running"]
    record = run_record(running, None, None, now) | {"harnessError": problem}
    history = with_record(step.state.get("history") or [], record, vd.spec.soak.history)
    state = {k: v for k, v in step.state.items() if k != "running"} | {"history": history}
    kept = tuple(n for n in step.notices if n.reason != STARTED)
    return Step(state, None, (*kept, result_notice(record)))


def _refusal(run_id: str, queued: Record | None) -> str | None:
    """Why an on-demand trigger cannot even wait, if it cannot."""
    if len(run_id) > MAX_RUN_ID:
        return f"its id is over {MAX_RUN_ID} characters"
    if queued is not None:
        return f"run {queued['runId']!r} is queued already; annotate again later"
    return None


def _over(running: Record, job: dict[str, Any] | None, now: datetime.datetime) -> bool:
    if job is not None:
        return job["ended"] is not None
    age = (now - parse_time(running["startedAt"])).total_seconds()
    return age > JOB_APPEARS_WITHIN_S


def _running(vd: VoiceDeployment, run: Run, now: datetime.datetime) -> Record:
    soak = vd.spec.soak
    return {
        "runId": run.run_id,
        "trigger": run.trigger,
        "job": job_name(vd, run.number),
        "startedAt": timestamp(now),
        "sessions": soak.sessions,
        "durationSeconds": soak.duration_seconds,
        "generation": vd.metadata.generation,
    }


def _schedule(
    expression: str, previous: Record | None, now: datetime.datetime
) -> tuple[Record | None, datetime.datetime | None, str | None]:
    """The next `status.soak.schedule`, the slot due now (if any), and the error of an
    expression seen for the first time that croniter refuses."""
    if not expression:
        return None, None, None
    if previous is None or previous.get("expression") != expression:
        try:
            last = schedule.latest_slot(expression, now)
        except schedule.InvalidSchedule as exc:
            return {"expression": expression, "error": str(exc)}, None, str(exc)
        return _slots(expression, last), None, None
    if previous.get("error") or not previous.get("lastSlot"):
        return previous, None, None
    slot = schedule.due_slot(expression, parse_time(previous["lastSlot"]), now)
    if slot is None:
        return previous, None, None
    return _slots(expression, slot), slot, None


def _slots(expression: str, last: datetime.datetime) -> Record:
    return {
        "expression": expression,
        "lastSlot": timestamp(last),
        "nextSlot": timestamp(schedule.next_slot(expression, last)),
    }
