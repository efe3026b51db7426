"""Writing a VoiceDeployment's status: one writer per object at a time, each change once.

The status is computed from in-memory views (kopf's indexes) that lag the operator's own
writes by a watch round-trip. Comparing with the status as last *seen* would write a change
twice, move `lastTransitionTime` and post its Event twice; so the publisher remembers what it
last wrote to each object (by uid) and computes the next status from that. Writers of the same
object queue on a lock and compute when their turn comes, from the freshest views, so a burst
of child events becomes at most one patch per real change.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from parley_operator.status import OWN_CONDITIONS, Notice, differs, notable_transitions

Status = dict[str, Any]
PatchStatus = Callable[[str, str, Status], Awaitable[None]]
PostEvent = Callable[[dict[str, Any], Notice], None]


class StatusPublisher:
    def __init__(self, patch: PatchStatus, post: PostEvent) -> None:
        self._patch = patch
        self._post = post
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._written: dict[str, Status] = {}

    def previous(self, vd: dict[str, Any]) -> Status:
        """The object's status as far as this operator knows: what it last wrote, over what it
        last saw (fields and conditions other writers own come from what it saw)."""
        seen: Status = vd.get("status") or {}
        written = self._written.get(vd["metadata"]["uid"])
        if written is None:
            return seen
        foreign = [c for c in seen.get("conditions", []) if c.get("type") not in OWN_CONDITIONS]
        own = [c for c in written.get("conditions", []) if c.get("type") in OWN_CONDITIONS]
        return {**seen, **written, "conditions": own + foreign}

    async def publish(self, vd: dict[str, Any], compute: Callable[[Status], Status]) -> bool:
        """Compute the status from the previous one and write it if it changed; post an Event
        for each notable transition. True when a patch was written."""
        meta = vd["metadata"]
        async with self._locks[meta["uid"]]:
            previous = self.previous(vd)
            status = compute(previous)
            if not differs(previous, status):
                return False
            await self._patch(meta["namespace"], meta["name"], status)
            self._written[meta["uid"]] = status
        for notice in notable_transitions(previous, status):
            self._post(vd, notice)
        return True

    def forget(self, uid: str) -> None:
        """The object is gone: drop what was remembered for it."""
        self._written.pop(uid, None)
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]
