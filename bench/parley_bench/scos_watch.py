"""Scraping a runtime's `GET /v1/scos` during a run (`parley soak`, `parley bench capacity`):
how many scrapes worked, the highest backpressure level and worst media health seen, and the
last summary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import ValidationError

from parley.scos import Scos
from parley_bench.background import in_background


async def fetch_scos(http: httpx.AsyncClient, target: str) -> Scos:
    """One summary; raises `httpx.HTTPError` or `pydantic.ValidationError`."""
    response = await http.get(f"{target}/v1/scos")
    response.raise_for_status()
    return Scos.model_validate(response.json())


def essentials(scos: Scos) -> dict[str, Any]:
    """What a soak summary keeps of one SCOS snapshot (small: the summary is capped)."""
    steady = scos.latency.steady
    return {
        "active": scos.sessions.active,
        "capacity": scos.sessions.capacity,
        "admission_cap": scos.sessions.admission_cap,
        "rejected_total": scos.sessions.rejected_total,
        "cut_total": scos.sessions.cut_total,
        "level": int(scos.backpressure.level),
        "reasons": scos.backpressure.reasons[:3],
        "window_s": scos.latency.window_s,
        "ttfa_p95_ms": steady.ttfa.p95_ms,
        "ttfa_n": steady.ttfa.samples,
        "v2v_p95_ms": steady.v2v.p95_ms,
        "barge_in_p95_ms": steady.barge_in.p95_ms,
        "loop_lag_p95_ms": scos.media.event_loop_lag_p95_ms,
        "late_frame_ratio": scos.media.late_frame_ratio,
        "draining": scos.draining,
    }


class ScosWatcher:
    """Scrapes every `interval_s` until cancelled; never raises for a failed scrape."""

    def __init__(self, http: httpx.AsyncClient, target: str, interval_s: float = 5.0) -> None:
        self._http = http
        self._target = target
        self._interval_s = interval_s
        self.scrapes = 0
        self.failures = 0
        self.last_failure: str | None = None
        self.last: Scos | None = None
        self.max_level = -1
        self.max_level_name: str | None = None
        self.max_loop_lag_p95_ms = 0.0
        self.max_late_frame_ratio = 0.0

    async def run(self) -> None:
        while True:
            await self.scrape()
            await asyncio.sleep(self._interval_s)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScosWatcher]:
        """Scrape in the background for the duration of the block."""
        async with in_background(self.run(), "scos-watch"):
            yield self

    async def scrape(self) -> Scos | None:
        try:
            scos = await fetch_scos(self._http, self._target)
        except (httpx.HTTPError, ValidationError, ValueError) as exc:
            self.failures += 1
            self.last_failure = _describe(exc)
            return None
        self.scrapes += 1
        self.last = scos
        if scos.backpressure.level > self.max_level:
            self.max_level = int(scos.backpressure.level)
            self.max_level_name = scos.backpressure.name
        self.max_loop_lag_p95_ms = max(self.max_loop_lag_p95_ms, scos.media.event_loop_lag_p95_ms)
        self.max_late_frame_ratio = max(self.max_late_frame_ratio, scos.media.late_frame_ratio)
        return scos

    def summary(self) -> dict[str, Any]:
        return {
            "scrapes": self.scrapes,
            "failures": self.failures,
            "last_failure": self.last_failure,
            "max_level": self.max_level if self.scrapes else None,
            "max_level_name": self.max_level_name,
            "max_loop_lag_p95_ms": self.max_loop_lag_p95_ms if self.scrapes else None,
            "max_late_frame_ratio": self.max_late_frame_ratio if self.scrapes else None,
            "last": essentials(self.last) if self.last is not None else None,
        }


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ValidationError):
        return f"not parley.scos/v1: {exc.error_count()} validation errors"
    return type(exc).__name__
