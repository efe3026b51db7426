"""What the pod reports about itself: Prometheus metrics, the SCOS summary (`parley.scos`) and
the backpressure level that degrades visuals, then verbosity, then admission."""

from parley_runtime.signals.backpressure import BackpressureState, Load, Policy, admission_cap
from parley_runtime.signals.collector import PodCounts, SignalCollector
from parley_runtime.signals.metrics import PrometheusObserver, RuntimeMetrics

__all__ = [
    "BackpressureState",
    "Load",
    "PodCounts",
    "Policy",
    "PrometheusObserver",
    "RuntimeMetrics",
    "SignalCollector",
    "admission_cap",
]
