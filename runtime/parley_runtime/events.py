"""The `events` data channel: JSON objects with a `type` (see DESIGN.md, Contracts).

Events sent before the client's channel opens are kept (a bounded number) and delivered on
open, so the first `state` event is never lost to a race.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from aiortc import RTCDataChannel

from parley_runtime.turns import ConversationState

EVENTS_LABEL = "events"
log = logging.getLogger(__name__)


def state_event(state: ConversationState) -> dict[str, Any]:
    return {"type": "state", "state": state.value}


def transcript_event(role: str, text: str, final: bool) -> dict[str, Any]:
    return {"type": "transcript", "role": role, "text": text, "final": final}


def response_event(text: str, final: bool) -> dict[str, Any]:
    return {"type": "response", "text": text, "final": final}


def error_event(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


class EventChannel:
    def __init__(self, backlog: int = 256) -> None:
        self._channel: RTCDataChannel | None = None
        self._backlog: deque[str] = deque(maxlen=backlog)

    def attach(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        if channel.readyState == "open":
            self._drain()
        else:
            channel.on("open", self._drain)

    def send(self, event: dict[str, Any]) -> None:
        message = json.dumps(event)
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            try:
                channel.send(message)
            except Exception as exc:  # a closing transport must not take the session down
                log.debug("event dropped: %r", exc)
        else:
            self._backlog.append(message)

    async def flushed(self, timeout_s: float = 0.5) -> None:
        """Wait (briefly) until what was sent has left, e.g. the last `state` before a close."""
        channel = self._channel
        if channel is None or channel.readyState != "open" or channel.bufferedAmount == 0:
            return
        low = asyncio.Event()
        channel.once("bufferedamountlow", low.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(low.wait(), timeout_s)

    def _drain(self) -> None:
        while self._backlog and self._channel is not None:
            self._channel.send(self._backlog.popleft())
