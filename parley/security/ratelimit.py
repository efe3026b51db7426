"""A per-client rate limit: at most `limit` hits per key in any `window_s` (a sliding window of
hit times). Pure: the caller passes the time. Memory is bounded: at most `limit` times per key
and `max_keys` keys; beyond that the key hit least recently is forgotten (a flood of distinct
addresses can only make the limiter forget, never grow)."""

from __future__ import annotations

from collections import OrderedDict, deque


class RateLimiter:
    def __init__(self, limit: int, window_s: float = 60.0, max_keys: int = 10_000) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str, now: float) -> float | None:
        """Count a hit of `key` at `now` if the limit allows it: None. Otherwise nothing is
        counted, and the answer is the seconds until a hit would be allowed."""
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            self._bound()
        self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return hits[0] + self.window_s - now
        hits.append(now)
        return None

    def __len__(self) -> int:
        return len(self._hits)

    def _bound(self) -> None:
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)
