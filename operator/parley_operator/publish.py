"""Writing a VoiceDeployment's status: one writer per object at a time, each change once.

The status is computed from in-memory views (kopf's indexes) that lag the operator's own
writes by a watch round-trip. Comparing with the status as last *seen* would write a change
twice, move `lastTransitionTime` and post its Event twice; so the publisher remembers what it
last wrote to each object (by uid) and computes the next status from that. Writers of the same
object queue on a lock and compute when their turn comes, from the freshest views, so a burst
of child events becomes at most one patch per real change.

Several writers share one publisher (the reconcile, the autoscaler, the soak runs), each
patching its own top-level fields and the whole `conditions` list (a merge patch replaces a
list), carrying over the conditions it does not compute. What is remembered is every field and
every condition as last written, whoever wrote it; what was seen counts only for what this
operator has not written (fields and conditions from before it started).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from parley_operator.status import Notice, differs, notable_transitions

Status = dict[str, Any]
PatchStatus = Callable[[str, str, Status], Awaitable[None]]
PostEvent = Callable[[dict[str, Any], Notice], None]


class StatusPublisher:
    def __init__(self, patch: PatchStatus, post: PostEvent) -> None:
        self._patch = patch
        self._post = post
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._written: dict[str, Status] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _this_run(self) -> None:
        """A new event loop is a new operator run (tests start several in one process): the
        locks, and what the last run wrote, belonged to the last one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is not self._loop:
            self._loop = loop
            self._locks.clear()
            self._written.clear()

    def previous(self, vd: dict[str, Any]) -> Status:
        """The object's status as far as this operator knows: what it last wrote, over what it
        last saw (fields and condition types it has not written come from what it saw)."""
        self._this_run()
        seen: Status = vd.get("status") or {}
        written = self._written.get(vd["metadata"]["uid"])
        if written is None:
            return seen
        own = written.get("conditions", [])
        types = {c.get("type") for c in own}
        unwritten = [c for c in seen.get("conditions", []) if c.get("type") not in types]
        return {**seen, **written, "conditions": own + unwritten}

    async def publish(self, vd: dict[str, Any], compute: Callable[[Status], Status]) -> bool:
        """Compute the status from the previous one and write it if it changed; post an Event
        for each notable transition. True when a patch was written."""
        meta = vd["metadata"]
        self._this_run()
        async with self._locks[meta["uid"]]:
            previous = self.previous(vd)
            status = compute(previous)
            if not differs(previous, status):
                return False
            await self._patch(meta["namespace"], meta["name"], status)
            self._written[meta["uid"]] = {**self._written.get(meta["uid"], {}), **status}
        for notice in notable_transitions(previous, status):
            self._post(vd, notice)
        return True

    def forget(self, uid: str) -> None:
        """The object is gone: drop what was remembered for it."""
        self._written.pop(uid, None)
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]
