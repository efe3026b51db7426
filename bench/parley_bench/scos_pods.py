"""SCOS stand-ins for runtime pods that cannot run here: `parley bench scaling` asks the operator
to scrape a hundred runtime pods, and a 2-core machine runs two or three real runtimes at most.

One HTTP server (uvicorn, its own event loop in a thread) listens on each stand-in's own loopback
address, port 8080, and answers what the operator reads of a runtime pod, over real HTTP:
`GET /readyz`, `GET /v1/scos` (a `parley.scos/v1` summary built with the runtime's own model: a
steady made-up load of 0-3 sessions out of 8, NORMAL), and `POST`/`DELETE /v1/drain` (the
summary then says draining). Nothing else of a runtime is there: no media, no models.
`ScosKubelet` places the pods on those addresses, as `RuntimeKubelet` does for real runtimes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from parley.scos import (
    Backpressure,
    BackpressureLevel,
    Latency,
    LatencySet,
    Media,
    Percentiles,
    Scos,
    Sessions,
    Turns,
)
from parley_bench.kubelet import RUNTIME_PORT, Kubelet, loopback_address

CAPACITY = 8


def summary(address: str, draining: bool, started: float) -> Scos:
    """What the stand-in at `address` reports now: the same few sessions every time."""
    active = zlib.crc32(address.encode()) % 4
    level = BackpressureLevel.NORMAL
    window = Percentiles(samples=20, p50_ms=420.0, p95_ms=610.0)
    latency = LatencySet(ttfa=window, v2v=window, barge_in=Percentiles(samples=0))
    now = time.time()
    return Scos(
        generated_at=now,
        uptime_s=now - started,
        ready=not draining,
        draining=draining,
        sessions=Sessions(
            active=active,
            capacity=CAPACITY,
            admission_cap=0 if draining else CAPACITY,
            admitted_total=active,
            rejected_total=0,
            cut_total=0,
        ),
        backpressure=Backpressure(
            level=level, name=level.name, since=started, reasons=[], changes_total=0
        ),
        latency=Latency(window_s=60.0, steady=latency, warm_up=latency),
        turns=Turns(),
        media=Media(event_loop_lag_p95_ms=1.0, frames_sent=0, late_frame_ratio=0.0),
    )


class ScosServer:
    """The stand-ins for `count` pods, at the addresses a kubelet gives from `first_index` on."""

    def __init__(self, first_index: int, count: int) -> None:
        self.first_index = first_index
        self.addresses = [loopback_address(first_index + i) for i in range(count)]
        self.draining: set[str] = set()
        self.requests = 0
        self._started = time.time()
        app = Starlette(
            routes=[
                Route("/readyz", self._readyz),
                Route("/v1/scos", self._scos),
                Route("/v1/drain", self._drain, methods=["POST", "DELETE"]),
            ]
        )
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ScosServer:
        sockets = []
        for address in self.addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, RUNTIME_PORT))
            sockets.append(sock)
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._server.serve(sockets=sockets),), daemon=True
        )
        self._thread.start()
        while not self._server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def _address(self, request: Request) -> str:
        server: Any = request.scope.get("server") or ("", 0)
        return str(server[0])

    async def _readyz(self, request: Request) -> Response:
        draining = self._address(request) in self.draining
        return PlainTextResponse("draining" if draining else "ok", 503 if draining else 200)

    async def _scos(self, request: Request) -> Response:
        self.requests += 1
        address = self._address(request)
        scos = summary(address, address in self.draining, self._started)
        return JSONResponse(scos.model_dump(mode="json", by_alias=True))

    async def _drain(self, request: Request) -> Response:
        address = self._address(request)
        if request.method == "POST":
            self.draining.add(address)
        else:
            self.draining.discard(address)
        return JSONResponse({"draining": address in self.draining})


@dataclass
class ScosPod:
    """One pod's backend: its address on the shared server (always up; Ready unless drained)."""

    address: str
    server: ScosServer
    partitioned: bool = False
    ready: bool = False

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 40) -> int | None:
        return 0

    def probe(self) -> bool:
        return self.address not in self.server.draining


class ScosKubelet(Kubelet):
    """Places each pod on the next stand-in address of `server`."""

    def __init__(
        self, kubeconfig: Path | None, namespace: str, selector: str, server: ScosServer
    ) -> None:
        super().__init__(kubeconfig, namespace, selector, first_index=server.first_index)
        self.server = server

    def backend(self, pod: str, container: Any, address: str) -> ScosPod:
        return ScosPod(address, self.server)
