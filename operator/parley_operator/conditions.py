"""The one catalogue of condition types and reasons the operator writes into status."""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    VRAM_BUDGET = "VRAMBudget"
    SOAK_PASSING = "SoakPassing"


class Reason(StrEnum):
    # Ready / Progressing / Degraded
    ALL_REPLICAS_READY = "AllReplicasReady"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_COMPLETE = "RolloutComplete"
    REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
    RECONCILE_FAILED = "ReconcileFailed"
    SPEC_REFUSED = "SpecRefused"
    # VRAMBudget
    WITHIN_BUDGET = "WithinBudget"
    NO_GPU = "NoGPU"
    OVER_WORKING_CAP = "OverWorkingCap"
    SHARED_GPU_OVERCOMMITTED = "SharedGPUOvercommitted"
    NODE_GPU_SMALLER_THAN_SPEC = "NodeGPUSmallerThanSpec"
    # SoakPassing
    SOAK_NOT_RUN = "SoakNotRun"
