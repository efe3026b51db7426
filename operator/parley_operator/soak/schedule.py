"""When a scheduled soak is due. Pure: the clock is an argument.

`spec.soak.schedule` is a five-field cron expression in UTC (or a macro such as `@daily`). The
CRD refuses what is not shaped like one; croniter judges the rest (`61 * * * *`), and the
operator reports an expression it refuses in `status.soak.schedule.error` and an Event.

The operator remembers the last slot it handled (`status.soak.schedule.lastSlot`). A slot is
due once the clock has passed it; when several have passed (the operator was down), only the
latest runs, once. A new or changed schedule starts from the present: the slots before it are
not owed.
"""

from __future__ import annotations

import datetime

from croniter import croniter

#: Cron slots fall on whole minutes; a second past one is enough to find it as "previous".
_SECOND = datetime.timedelta(seconds=1)


class InvalidSchedule(ValueError):
    """A cron expression croniter refuses; the message says why."""


def _cron(expression: str, start: datetime.datetime) -> croniter:
    try:
        return croniter(expression, start)
    except ValueError as exc:  # croniter's errors are ValueErrors
        raise InvalidSchedule(f"soak.schedule {expression!r} is not a valid cron: {exc}") from exc


def latest_slot(expression: str, now: datetime.datetime) -> datetime.datetime:
    """The latest slot at or before `now`."""
    start = now.replace(microsecond=0) + _SECOND
    slot: datetime.datetime = _cron(expression, start).get_prev(datetime.datetime)
    return slot


def next_slot(expression: str, after: datetime.datetime) -> datetime.datetime:
    """The first slot after `after`."""
    slot: datetime.datetime = _cron(expression, after).get_next(datetime.datetime)
    return slot


def due_slot(
    expression: str, last_slot: datetime.datetime, now: datetime.datetime
) -> datetime.datetime | None:
    """The slot to run now: the latest one after `last_slot` that `now` has reached, if any."""
    slot = latest_slot(expression, now)
    return slot if slot > last_slot else None
