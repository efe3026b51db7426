"""The model manager: which speech models are resident, loaded when, evicted when.

- The default model is preloaded (and warmed) at startup, with an optional preload list.
- Other models load on demand; at most `max_parallel_loads` load at once, and concurrent
  requests for the same model share one load.
- Every use holds a reference (`async with manager.use(name) as model`); a model in use is
  never evicted.
- Idle models are evicted after `idle_ttl_s`; beyond `max_resident` models, the least recently
  used idle one goes first. If every resident model is in use, the cap is exceeded rather
  than a request failed, and the surplus is evicted as soon as a model is released.

Loading and unloading are injected (`load`, `unload`), so this module knows nothing about
Piper, XTTS or GPUs, and is tested with real loads all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

M = TypeVar("M")
log = logging.getLogger(__name__)


class UnknownModelError(KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown model or voice {self.name!r}; known: {self.known}"


@dataclass
class _Entry(Generic[M]):
    model: M
    refs: int = 0
    last_used: float = 0.0
    loaded_at: float = 0.0


@dataclass
class ManagerStats:
    loads: int = 0
    evictions: dict[str, int] = field(default_factory=lambda: {"ttl": 0, "lru": 0})


class ModelManager(Generic[M]):
    def __init__(
        self,
        known: list[str],
        load: Callable[[str], Awaitable[M]],
        unload: Callable[[str, M], None] = lambda name, model: None,
        *,
        max_resident: int = 2,
        idle_ttl_s: float = 600.0,
        max_parallel_loads: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.known = list(known)
        self._load = load
        self._unload = unload
        self.max_resident = max_resident
        self.idle_ttl_s = idle_ttl_s
        self._clock = clock
        self._loads = asyncio.Semaphore(max_parallel_loads)
        self._resident: dict[str, _Entry[M]] = {}
        self._loading: dict[str, asyncio.Task[M]] = {}
        self.pinned: set[str] = set()
        self.stats = ManagerStats()

    # -- queries --------------------------------------------------------------------------

    def resident(self) -> list[str]:
        return list(self._resident)

    def loaded(self, name: str) -> M | None:
        entry = self._resident.get(name)
        return entry.model if entry else None

    def refs(self, name: str) -> int:
        entry = self._resident.get(name)
        return entry.refs if entry else 0

    # -- use ------------------------------------------------------------------------------

    async def preload(self, names: list[str], pin: bool = False) -> None:
        for name in names:
            await self._get(name)
            if pin:
                self.pinned.add(name)

    @contextlib.asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[M]:
        """Hold `name` resident for the duration; loads it if needed."""
        entry = await self._get(name)
        entry.refs += 1
        try:
            yield entry.model
        finally:
            entry.refs -= 1
            entry.last_used = self._clock()
            self._enforce_cap()

    async def _get(self, name: str) -> _Entry[M]:
        if name not in self.known:
            raise UnknownModelError(name, self.known)
        while True:
            entry = self._resident.get(name)
            if entry is not None:
                entry.last_used = self._clock()
                return entry
            task = self._loading.get(name)
            if task is None:
                task = asyncio.create_task(self._load_one(name), name=f"load-{name}")
                self._loading[name] = task
            await asyncio.shield(task)  # evicted again before this waiter resumed: reload

    async def _load_one(self, name: str) -> M:
        try:
            async with self._loads:
                started = self._clock()
                model = await self._load(name)
                log.info("loaded %s in %.1f s", name, self._clock() - started)
                self.stats.loads += 1
                self._admit(name, model)
                return model
        finally:
            self._loading.pop(name, None)

    def _admit(self, name: str, model: M) -> _Entry[M]:
        now = self._clock()
        entry = _Entry(model, last_used=now, loaded_at=now)
        self._resident[name] = entry
        self._enforce_cap(keep=name)
        return entry

    # -- eviction -------------------------------------------------------------------------

    def _evictable(self) -> list[str]:
        idle = [n for n, e in self._resident.items() if e.refs == 0 and n not in self.pinned]
        return sorted(idle, key=lambda n: self._resident[n].last_used)

    def _enforce_cap(self, keep: str | None = None) -> None:
        """Evict least recently used idle models down to the cap; `keep` was just loaded for
        a request and is not its own surplus."""
        for name in self._evictable():
            if len(self._resident) <= self.max_resident:
                break
            if name != keep:
                self._evict(name, "lru")

    def evict_idle(self) -> list[str]:
        """Evict models idle for longer than the TTL; returns their names."""
        now = self._clock()
        expired = [
            n for n in self._evictable() if now - self._resident[n].last_used >= self.idle_ttl_s
        ]
        for name in expired:
            self._evict(name, "ttl")
        return expired

    def _evict(self, name: str, reason: str) -> None:
        entry = self._resident.pop(name)
        self.stats.evictions[reason] += 1
        log.info("evicting %s (%s)", name, reason)
        self._unload(name, entry.model)

    async def run_evictions(self, every_s: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.evict_idle()

    def close(self) -> None:
        for name in list(self._resident):
            self._unload(name, self._resident.pop(name).model)
