"""Sliding time windows for the SCOS summary: samples older than the window fall out.

Pure bookkeeping with an explicit `now`, so percentiles over "the last 60 s" are testable
without a clock. Memory is bounded by `max_samples` as well as by time.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from parley.scos import Percentiles


class SampleWindow:
    """Values (latencies in ms) with the time they were observed."""

    def __init__(self, window_s: float, max_samples: int = 10_000) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, value: float, now: float) -> None:
        self._samples.append((now, value))

    def values(self, now: float) -> list[float]:
        self._expire(now)
        return [value for _, value in self._samples]

    def percentiles(self, now: float) -> Percentiles:
        values = self.values(now)
        if not values:
            return Percentiles(samples=0)
        p50, p95 = np.percentile(values, [50, 95])
        return Percentiles(
            samples=len(values), p50_ms=round(float(p50), 1), p95_ms=round(float(p95), 1)
        )

    def _expire(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()


class CountWindow:
    """Named event counts within the window (turn outcomes)."""

    def __init__(self, window_s: float, max_events: int = 100_000) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, str]] = deque(maxlen=max_events)

    def add(self, name: str, now: float) -> None:
        self._events.append((now, name))

    def counts(self, now: float) -> dict[str, int]:
        while self._events and self._events[0][0] < now - self.window_s:
            self._events.popleft()
        counts: dict[str, int] = {}
        for _, name in self._events:
            counts[name] = counts.get(name, 0) + 1
        return counts


class RateWindow:
    """A ratio of two cumulative counters (late frames / frames sent) over the window, from
    snapshots taken about once a second."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._snapshots: deque[tuple[float, int, int]] = deque()

    def record(self, total: int, part: int, now: float) -> None:
        self._snapshots.append((now, total, part))
        while len(self._snapshots) > 2 and self._snapshots[1][0] <= now - self.window_s:
            self._snapshots.popleft()

    def delta(self) -> tuple[int, int]:
        """(total, part) accumulated across the window."""
        if len(self._snapshots) < 2:
            return 0, 0
        (_, total0, part0), (_, total1, part1) = self._snapshots[0], self._snapshots[-1]
        return max(0, total1 - total0), max(0, part1 - part0)

    def ratio(self) -> float:
        total, part = self.delta()
        return part / total if total else 0.0
