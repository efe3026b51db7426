"""Every metric the operator exports, defined once, and the `/metrics` endpoint.

Served by the operator process on `PARLEY_OPERATOR_METRICS_PORT` (default 8081; 0 turns it
off). Labels are small fixed sets, never free text: `kind` names what ran (`reconcile`: a
VoiceDeployment created, changed or resumed; `child`: a child Deployment's event; `scale`: one
autoscaler round), `reason` of a failed scrape is one of `ScrapeFailure`, and the `reason` of a
scaling decision one of `status.ScalingCause`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from threading import Thread
from typing import ParamSpec, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

DEFAULT_PORT = 8081
log = logging.getLogger(__name__)

RECONCILES = Counter(
    "parley_operator_reconciles_total",
    "Handler runs, by kind: reconcile (VoiceDeployment created, changed, resumed), child (a "
    "child Deployment's event), scale (one autoscaler round of one VoiceDeployment).",
    ["kind"],
)
RECONCILE_ERRORS = Counter(
    "parley_operator_reconcile_errors_total",
    "Handler runs that raised (retried by kopf, or on the next autoscaler round), by kind.",
    ["kind"],
)
RECONCILE_DURATION = Histogram(
    "parley_operator_reconcile_duration_seconds",
    "How long one handler run took, by kind (a scale round includes its SCOS reads).",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCOS_SCRAPES = Counter(
    "parley_operator_scos_scrapes_total",
    "GET /v1/scos requests made to runtime pods.",
)
SCOS_SCRAPE_FAILURES = Counter(
    "parley_operator_scos_scrape_failures_total",
    "GET /v1/scos requests that brought no summary, by reason: timeout, connect (refused, "
    "unreachable), status (not 200), invalid (not a parley.scos/v1 summary). A failed read "
    "holds the replicas; it never counts as an empty pod.",
    ["reason"],
)
SCALING_DECISIONS = Counter(
    "parley_operator_scaling_decisions_total",
    "Autoscaler decisions, by direction (up, down, hold) and reason (a fixed set: min, demand, "
    "backpressure, undrain, low_demand, above_max, drained, drain_timeout, steady, "
    "scrape_failed, disabled).",
    ["direction", "reason"],
)
SESSIONS_CUT = Counter(
    "parley_operator_sessions_cut_total",
    "Sessions still live on a drained runtime pod when the replicas were lowered (its drain "
    "timed out): the pod's own SIGTERM drain gets a last chance, then cuts them. Goal: 0.",
)

VRAM_CAP = Gauge(
    "parley_operator_vram_cap_bytes",
    "Each GPU component's VRAM cap in a VoiceDeployment's plan (its gpu.vramGiB), in bytes: "
    "what the component's GPU memory use is measured against.",
    ["namespace", "voicedeployment", "component"],
)
SOAK_PASSING = Gauge(
    "parley_operator_soak_passing",
    "The newest soak result of a VoiceDeployment: 1 passed, 0 failed (a criterion missed, or "
    "no readable summary); no sample before its first result.",
    ["namespace", "voicedeployment"],
)
COMPONENTS = ("runtime", "llm", "tts")

P = ParamSpec("P")
T = TypeVar("T")


@contextmanager
def measuring(kind: str) -> Iterator[None]:
    """Count one run of `kind`, time it, and count it as an error when it raises."""
    RECONCILES.labels(kind).inc()
    started = time.monotonic()
    try:
        yield
    except Exception:  # a cancelled run (operator stopping) is not an error
        RECONCILE_ERRORS.labels(kind).inc()
        raise
    finally:
        RECONCILE_DURATION.labels(kind).observe(time.monotonic() - started)


def measured(kind: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """`measuring(kind)` around every call of a coroutine function (a kopf handler)."""

    def decorate(handler: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(handler)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            with measuring(kind):
                return await handler(*args, **kwargs)

        return run

    return decorate


def observe_vram_caps(namespace: str, name: str, caps_gib: Mapping[str, float]) -> None:
    """A VoiceDeployment's VRAM caps (component → GiB); a component without one has none."""
    for component in COMPONENTS:
        if component in caps_gib:
            VRAM_CAP.labels(namespace, name, component).set(caps_gib[component] * 2**30)
        else:
            _remove(VRAM_CAP, namespace, name, component)


def observe_soak(namespace: str, name: str, passed: bool) -> None:
    SOAK_PASSING.labels(namespace, name).set(1 if passed else 0)


def forget(namespace: str, name: str) -> None:
    """A VoiceDeployment is gone: its gauges too."""
    observe_vram_caps(namespace, name, {})
    _remove(SOAK_PASSING, namespace, name)


def _remove(gauge: Gauge, *labels: str) -> None:
    with suppress(KeyError):  # never set
        gauge.remove(*labels)


def serve(port: int) -> tuple[WSGIServer, Thread] | None:
    """Serve `/metrics` on every interface at `port` in a background thread; None when `port` is
    0 or taken (the operator works on without its metrics, and says so)."""
    if port == 0:
        return None
    try:
        return start_http_server(port)
    except OSError as exc:
        log.error("operator metrics not served: port %d: %s", port, exc)
        return None


def stop(served: tuple[WSGIServer, Thread] | None) -> None:
    """Stop what `serve` started."""
    if served is not None:
        server, thread = served
        server.shutdown()
        server.server_close()
        thread.join(5)
