"""Percentile summaries shared by the benchmarks: the same rounding and the same sample-count
convention everywhere (p50/p95 are None when there are no samples)."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def percentiles(values: list[float]) -> dict[str, Any]:
    """`{n, p50_ms, p95_ms}`: the compact form the soak summary and SCOS use."""
    return {"n": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95)}


def summarize(values: list[float]) -> dict[str, Any]:
    """`percentiles` plus the mean."""
    return {
        **percentiles(values),
        "mean_ms": round(statistics.fmean(values), 1) if values else None,
    }
