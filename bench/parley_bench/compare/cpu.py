"""Who kept the machine's cores busy while a stack was measured.

The stacks, the LLM server and the client that plays the conversation share one machine. A
stack's latency under concurrent sessions depends on how many cores were left to it, so each
run reports the average number of cores each party used (CPU seconds over wall seconds) and
how busy the whole machine was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from parley_bench.proc import cpu_seconds, group_cpu_seconds, machine_cpu_seconds


@dataclass(frozen=True)
class CpuSample:
    at: float
    parties: Mapping[str, float]  # CPU seconds so far of each party
    machine_busy: float
    machine_total: float
    machine_cores: int


def cpu_use(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Average cores each party used between two samples, and the machine's busy share."""
    wall = max(after.at - before.at, 1e-9)
    use = {
        name: round((after.parties[name] - before.parties[name]) / wall, 2)
        for name in before.parties
    }
    total = after.machine_total - before.machine_total
    busy = after.machine_busy - before.machine_busy
    use["machine_busy_share"] = round(busy / total, 2) if total > 0 else 0.0
    use["machine_cores"] = after.machine_cores
    return use


class CpuMeter:
    """Samples `groups` (party name: process group of a server started in its own session)
    and this process, the client."""

    def __init__(self, groups: Mapping[str, int]) -> None:
        self._groups = dict(groups)

    def sample(self) -> CpuSample:
        parties = {name: group_cpu_seconds(pgid) for name, pgid in self._groups.items()}
        parties["client"] = cpu_seconds(os.getpid())
        busy, total = machine_cpu_seconds()
        return CpuSample(time.monotonic(), parties, busy, total, os.cpu_count() or 1)
