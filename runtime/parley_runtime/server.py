"""The runtime's HTTP surface (DESIGN.md, Contracts): sessions, health, drain, metrics and the
web client. Routes are thin: they validate, then hand over to the `SessionManager`."""

from __future__ import annotations

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

from parley_runtime.config import RuntimeSettings
from parley_runtime.services import (
    Models,
    build_services,
    close_clients,
    close_models,
    load_models,
)
from parley_runtime.sessions import CapacityError, OfferError, SessionManager
from parley_runtime.telemetry import PrometheusObserver
from parley_runtime.webrtc import use_host_addresses

log = logging.getLogger(__name__)
WEB_DIR = files("parley_runtime") / "web"
SDP_TYPE = "application/sdp"


def create_app(settings: RuntimeSettings | None = None, models: Models | None = None) -> FastAPI:
    """Build the app. Pass `models` to share loaded models between apps (tests); otherwise
    they load at startup and `/readyz` turns ready once they are warm."""
    settings = settings or RuntimeSettings()
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    metrics.sessions_capacity.set(settings.max_sessions)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        use_host_addresses(settings.ice_host_addresses)
        owned = models is None
        loaded = models or await load_models(settings)
        services = build_services(settings, loaded)
        manager = SessionManager(
            services,
            settings,
            [metrics],
            on_reaped=lambda r: metrics.sessions_reaped.labels(r).inc(),
        )
        manager.start_reaper()
        app.state.manager = manager
        app.state.services = services
        try:
            yield
        finally:
            await manager.close()
            await close_clients(services)
            if owned:
                close_models(loaded)

    app = FastAPI(title="Parley runtime", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.manager = None

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
            metrics.sessions_rejected.inc()
            raise HTTPException(
                503,
                f"not admitting sessions: {exc}",
                headers={"Retry-After": str(settings.retry_after_s)},
            ) from exc
        except OfferError as exc:
            raise HTTPException(422, str(exc)) from exc
        metrics.sessions_active.set(len(manager.sessions))
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
        metrics.sessions_active.set(len(manager.sessions))
        return Response(status_code=204)

    @app.post("/v1/drain")
    async def drain(request: Request) -> dict[str, Any]:
        manager = manager_of(request)
        manager.draining = True
        return {"draining": True, "active_sessions": len(manager.sessions)}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        manager: SessionManager | None = request.app.state.manager
        reasons = []
        if manager is None:
            reasons.append("models loading")
        elif manager.draining:
            reasons.append("draining")
        elif len(manager.sessions) >= manager.capacity:
            reasons.append("at capacity")
        return JSONResponse({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        manager: SessionManager | None = request.app.state.manager
        if manager is not None:
            metrics.sessions_active.set(len(manager.sessions))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(WEB_DIR / "index.html"))

    app.mount("/static", StaticFiles(directory=str(WEB_DIR)), name="static")
    return app


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
