"""This process's own event-loop lag: how late a 100 ms sleep wakes up.

A load generator that shares cores with what it measures must say when it was itself too
busy: client-side latencies measured on a lagging loop are inflated by that lag.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from parley_bench.background import in_background
from parley_bench.stats import percentile


class LoopLagProbe:
    def __init__(self, interval_s: float = 0.1, keep: int = 6000) -> None:
        self._interval_s = interval_s
        self._samples: deque[float] = deque(maxlen=keep)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self._interval_s
            await asyncio.sleep(self._interval_s)
            self._samples.append(max(0.0, loop.time() - expected) * 1000)

    def p95_ms(self) -> float | None:
        return percentile(list(self._samples), 95)

    def reset(self) -> None:
        self._samples.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoopLagProbe]:
        async with in_background(self.run(), "loop-lag"):
            yield self
