"""The runtime's HTTP surface (DESIGN.md, Contracts): sessions, health, drain, SCOS, metrics
and the web client. Routes are thin: they validate, then hand over to the `SessionManager`
(sessions, admission, drain) or the `SignalCollector` (SCOS, backpressure)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from parley.scos import BackpressureLevel
from parley_runtime.config import RuntimeSettings
from parley_runtime.services import (
    Models,
    build_services,
    close_clients,
    close_models,
    load_models,
)
from parley_runtime.sessions import CapacityError, OfferError, SessionManager
from parley_runtime.signals import Policy, PrometheusObserver, RuntimeMetrics, SignalCollector
from parley_runtime.webrtc import use_host_addresses

log = logging.getLogger(__name__)
WEB_DIR = files("parley_runtime") / "web"
SDP_TYPE = "application/sdp"


def create_app(settings: RuntimeSettings | None = None, models: Models | None = None) -> FastAPI:
    """Build the app. Pass `models` to share loaded models between apps (tests); otherwise
    they load at startup and `/readyz` turns ready once they are warm."""
    settings = settings or RuntimeSettings()
    registry = CollectorRegistry()
    metrics = RuntimeMetrics(registry)
    signals = SignalCollector(policy_of(settings), metrics, settings.signal_window_s)

    def visuals_enabled() -> bool:
        return settings.visuals and signals.level < BackpressureLevel.VISUALS_OFF

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        use_host_addresses(settings.ice_host_addresses)
        owned = models is None
        loaded = models or await load_models(settings)
        services = build_services(settings, loaded, backpressure=lambda: signals.level)
        manager = SessionManager(
            services,
            settings,
            [PrometheusObserver(metrics), signals],
            metrics,
            admission_cap=signals.admission_cap,
            visuals_enabled=visuals_enabled,
        )
        manager.start_reaper()
        signal_loop = asyncio.create_task(signals.run(manager.counts), name="signals")
        app.state.manager = manager
        app.state.services = services
        try:
            yield
        finally:
            signal_loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await signal_loop
            await manager.close()
            await close_clients(services)
            if owned:
                close_models(loaded)

    app = FastAPI(title="Parley runtime", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.manager = None
    app.state.signals = signals
    app.state.shutting_down = False

    def manager_of(request: Request) -> SessionManager:
        manager: SessionManager | None = request.app.state.manager
        if manager is None:
            raise HTTPException(503, "models are still loading", headers={"Retry-After": "5"})
        return manager

    @app.post("/v1/sessions", status_code=201)
    async def create_session(request: Request) -> Response:
        manager = manager_of(request)
        body = await _read_limited(request, settings.max_body_bytes)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        whip = content_type == SDP_TYPE
        offer = _parse_offer(body, whip)
        voice = offer.get("voice")
        known = request.app.state.services.tts.voices()
        if voice is not None and known and voice not in known:
            raise HTTPException(422, f"unknown voice {voice!r}; known voices: {known}")
        try:
            session, answer = await manager.create(offer["sdp"], offer.get("system_prompt"), voice)
        except CapacityError as exc:
            raise HTTPException(
                503,
                f"not admitting sessions: {exc}",
                headers={"Retry-After": str(settings.retry_after_s)},
            ) from exc
        except OfferError as exc:
            raise HTTPException(422, str(exc)) from exc
        location = {"Location": f"/v1/sessions/{session.id}"}
        if whip:
            return Response(answer, 201, headers=location, media_type=SDP_TYPE)
        return JSONResponse(
            {"id": session.id, "sdp": answer, "type": "answer"}, 201, headers=location
        )

    @app.get("/v1/sessions")
    async def list_sessions(request: Request) -> dict[str, Any]:
        manager = manager_of(request)
        return {
            "sessions": [s.info().as_dict() for s in manager.sessions.values()],
            "capacity": manager.capacity,
        }

    @app.get("/v1/sessions/{session_id}")
    async def get_session(session_id: str, request: Request) -> dict[str, Any]:
        session = manager_of(request).get(session_id)
        if session is None:
            raise HTTPException(404, f"no session {session_id!r}")
        return session.info().as_dict()

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    async def delete_session(session_id: str, request: Request) -> Response:
        manager = manager_of(request)
        if not await manager.remove(session_id):
            raise HTTPException(404, f"no session {session_id!r}")
        return Response(status_code=204)

    @app.post("/v1/drain")
    async def drain(request: Request) -> dict[str, Any]:
        """Stop admitting; live sessions go on. The pod stays up (the operator deletes it once
        it reports no sessions); SIGTERM drains the same way and then exits."""
        manager = manager_of(request)
        manager.drain()
        return {"draining": True, "active_sessions": len(manager.sessions)}

    @app.delete("/v1/drain")
    async def undrain(request: Request) -> dict[str, Any]:
        manager = manager_of(request)
        if request.app.state.shutting_down:
            raise HTTPException(409, "the process is shutting down (SIGTERM); it cannot undrain")
        manager.undrain()
        return {"draining": False, "active_sessions": len(manager.sessions)}

    @app.get("/v1/scos")
    async def scos(request: Request) -> Response:
        summary = signals.summary(manager_of(request).counts())
        return Response(summary.to_json(), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Loaded and not draining. A full or shedding pod stays ready: it refuses new sessions
        with 503 itself, so Kubernetes never takes the busiest pods for unhealthy."""
        manager: SessionManager | None = request.app.state.manager
        reasons = []
        if manager is None:
            reasons.append("models loading")
        elif manager.draining:
            reasons.append("draining")
        return JSONResponse({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(WEB_DIR / "index.html"))

    app.mount("/static", StaticFiles(directory=str(WEB_DIR)), name="static")
    return app


def policy_of(settings: RuntimeSettings) -> Policy:
    load, lag, late = (
        settings.backpressure_load_steps,
        settings.backpressure_loop_lag_ms,
        settings.backpressure_late_frames,
    )
    return Policy(
        ttfa_slo_ms=settings.ttfa_slo_ms,
        load=(load[0], load[1], load[2], load[3]),
        loop_lag_ms=(lag[0], lag[1], lag[2], lag[3]),
        late_frames=(late[0], late[1], late[2], late[3]),
        hold_s=settings.backpressure_hold_s,
        limited_fraction=settings.admission_limited_fraction,
    )


async def drain_for_exit(app: FastAPI) -> int:
    """SIGTERM: stop admitting, let live sessions end within the grace period, cut the rest.
    Returns how many were cut."""
    app.state.shutting_down = True
    manager: SessionManager | None = app.state.manager
    if manager is None:
        return 0
    settings: RuntimeSettings = app.state.settings
    manager.drain()
    if await manager.wait_empty(settings.drain_timeout_s):
        log.warning("drained: every session ended; exiting")
        return 0
    cut = await manager.cut_all(f"drain timeout ({settings.drain_timeout_s:g} s)")
    log.warning("drain timeout: cut %d session(s); exiting", cut)
    return cut


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes is over the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPException(413, f"body is over the {limit}-byte limit")
    return bytes(body)


def _parse_offer(body: bytes, whip: bool) -> dict[str, Any]:
    if whip:
        return {"sdp": body.decode("utf-8", errors="replace"), "type": "offer"}
    try:
        offer = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(422, f"body is not JSON: {exc}") from exc
    if not isinstance(offer, dict) or not isinstance(offer.get("sdp"), str):
        raise HTTPException(422, 'expected {"sdp": "...", "type": "offer"}')
    if offer.get("type", "offer") != "offer":
        raise HTTPException(422, f"expected type 'offer', got {offer.get('type')!r}")
    for field in ("system_prompt", "voice"):
        if field in offer and not isinstance(offer[field], str):
            raise HTTPException(422, f"{field!r} must be a string")
    return offer
