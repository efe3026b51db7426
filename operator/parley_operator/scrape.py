"""HTTP to the runtime pods, at their pod IP and the runtime's port: SCOS reads, drain, undrain
(with the runtime's admin token: render.py's Secret).

A read that brings no valid `parley.scos/v1` summary (timeout, refused, not 200, not the
schema) is None, never an empty pod: the decision holds the size for it. Each failure is
counted by reason in the operator's metrics and logged at debug with the detail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx
from pydantic import ValidationError

from parley.scos import Scos
from parley_operator import metrics
from parley_operator.render import RUNTIME_PORT

log = logging.getLogger(__name__)


class ScrapeFailure(StrEnum):
    TIMEOUT = "timeout"
    CONNECT = "connect"
    STATUS = "status"
    INVALID = "invalid"


@dataclass(frozen=True)
class Scraped:
    """One pod's read: its summary, or why there is none."""

    scos: Scos | None
    failure: ScrapeFailure | None = None
    detail: str = ""


def pod_url(ip: str, path: str) -> str:
    host = f"[{ip}]" if ":" in ip else ip  # IPv6 pod IPs
    return f"http://{host}:{RUNTIME_PORT}{path}"


async def read_scos(http: httpx.AsyncClient, ip: str, timeout_s: float) -> Scraped:
    metrics.SCOS_SCRAPES.inc()
    try:
        response = await http.get(pod_url(ip, "/v1/scos"), timeout=timeout_s)
        if response.status_code != 200:
            return _failed(ip, ScrapeFailure.STATUS, f"HTTP {response.status_code}")
        return Scraped(Scos.model_validate_json(response.content))
    except httpx.TimeoutException:
        return _failed(ip, ScrapeFailure.TIMEOUT, f"no answer within {timeout_s:g} s")
    except httpx.TransportError as exc:
        return _failed(ip, ScrapeFailure.CONNECT, str(exc) or type(exc).__name__)
    except ValidationError as exc:
        return _failed(ip, ScrapeFailure.INVALID, f"not a parley.scos/v1 summary: {exc}")


def _failed(ip: str, failure: ScrapeFailure, detail: str) -> Scraped:
    metrics.SCOS_SCRAPE_FAILURES.labels(failure.value).inc()
    log.debug("SCOS of %s: %s (%s)", ip, failure.value, detail)
    return Scraped(None, failure, detail)


async def read_all(
    http: httpx.AsyncClient, ips: Mapping[str, str], timeout_s: float
) -> dict[str, Scraped]:
    """Every pod's SCOS (pod name → IP in, pod name → read out), read concurrently."""
    names = list(ips)
    reads = await asyncio.gather(*(read_scos(http, ips[name], timeout_s) for name in names))
    return dict(zip(names, reads, strict=True))


async def set_draining(
    http: httpx.AsyncClient, ip: str, draining: bool, timeout_s: float, token: str | None = None
) -> bool:
    """`POST /v1/drain` (draining) or `DELETE /v1/drain` (not), as admin (`token`); whether the
    pod did it. A 409 to an undrain means the pod is terminating already: it cannot take
    sessions back."""
    method = "POST" if draining else "DELETE"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = await http.request(
            method, pod_url(ip, "/v1/drain"), headers=headers, timeout=timeout_s
        )
    except httpx.HTTPError as exc:
        log.warning("%s /v1/drain on %s failed: %s", method, ip, str(exc) or type(exc).__name__)
        return False
    if response.status_code != 200:
        log.warning("%s /v1/drain on %s: HTTP %d", method, ip, response.status_code)
        return False
    return True
