"""The one catalogue of condition types and reasons the operator writes into status."""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    VRAM_BUDGET = "VRAMBudget"
    SOAK_PASSING = "SoakPassing"
    SIGNALS_AVAILABLE = "SignalsAvailable"


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
    # SoakPassing: Unknown until a run has a result; False names the first criterion missed
    SOAK_NOT_RUN = "SoakNotRun"
    SOAK_PASSED = "SoakPassed"
    TTFA_OVER_LIMIT = "TTFAOverLimit"
    BARGE_IN_OVER_LIMIT = "BargeInOverLimit"
    ERROR_RATE_OVER_LIMIT = "ErrorRateOverLimit"
    NO_TURN_ANSWERED = "NoTurnAnswered"
    CRITERIA_NOT_MET = "CriteriaNotMet"
    HARNESS_FAILED = "HarnessFailed"
    # SignalsAvailable: False once a runtime pod's SCOS has been missing for a few intervals
    SCOS_READ = "ScosRead"
    SCRAPE_FAILING = "ScrapeFailing"
