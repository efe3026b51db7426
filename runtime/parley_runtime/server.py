"""The runtime's HTTP surface (DESIGN.md, Contracts): sessions, health, drain, SCOS, metrics
and the web client. Routes are thin: they check who may call them (`access.py`), validate,
then hand over to the `SessionManager` (sessions, admission, drain) or the `SignalCollector`
(SCOS, backpressure). Middleware refuses what no route should see: bodies of another type or
over the size limit, foreign Host names, other origins' state changes (`parley.security`)."""

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
from pydantic import BaseModel, ConfigDict

from parley.scos import BackpressureLevel
from parley.security.bodies import BodyPolicy, media_type
from parley.security.browser import add_browser_guards, is_loopback_bind, loopback_hosts
from parley.security.docs import api_docs
from parley_runtime.access import SECRET_HEADER, Access
from parley_runtime.config import RuntimeSettings
from parley_runtime.services import (
    Models,
    build_services,
    close_clients,
    close_models,
    load_models,
)
from parley_runtime.sessions import CapacityError, OfferError, Session, SessionManager
from parley_runtime.signals import Policy, PrometheusObserver, RuntimeMetrics, SignalCollector
from parley_runtime.webrtc import use_host_addresses

log = logging.getLogger(__name__)
WEB_DIR = files("parley_runtime") / "web"
SDP_TYPE = "application/sdp"
JSON_TYPE = "application/json"


class SessionOffer(BaseModel):
    """`POST /v1/sessions` as JSON: the schema the API documents (`_parse_offer` reads it, with
    a reason for each way an offer can be wrong)."""

    model_config = ConfigDict(extra="allow")

    sdp: str
    type: str = "offer"
    system_prompt: str | None = None
    voice: str | None = None


#: The request body of `POST /v1/sessions` in the OpenAPI schema (the route reads the raw body).
OFFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON_TYPE: {"schema": SessionOffer.model_json_schema()},
            SDP_TYPE: {"schema": {"type": "string"}},
        },
    }
}


def allowed_hosts(settings: RuntimeSettings) -> list[str]:
    """The Host names served: as set, else the loopback names for a server listening on
    loopback, else any (`[]`): in a cluster the Host is a Service name or a pod IP."""
    if settings.allowed_hosts is not None:
        return settings.allowed_hosts
    return loopback_hosts(settings.host) if is_loopback_bind(settings.host) else []


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

    app = FastAPI(
        title="Parley runtime", version="0.1.0", lifespan=lifespan, **api_docs(settings.api_docs)
    )
    app.add_middleware(
        BodyPolicy, max_bytes=settings.max_body_bytes, media_types=(JSON_TYPE, SDP_TYPE)
    )
    add_browser_guards(
        app,
        allowed_hosts(settings),
        settings.cors_origins,
        expose_headers=("Location", SECRET_HEADER),
    )
    access = Access(settings)
    app.state.settings = settings
    app.state.manager = None
    app.state.signals = signals
    app.state.shutting_down = False

    def manager_of(request: Request) -> SessionManager:
        manager: SessionManager | None = request.app.state.manager
        if manager is None:
            raise HTTPException(503, "models are still loading", headers={"Retry-After": "5"})
        return manager

    def session_of(request: Request, session_id: str) -> Session:
        session = manager_of(request).get(session_id)
        if session is None:
            raise HTTPException(404, f"no session {session_id!r}")
        access.require_owner(request, session)
        return session

    @app.post("/v1/sessions", status_code=201, openapi_extra=OFFER_BODY)
    async def create_session(request: Request) -> Response:
        """Answer an offer (JSON or WHIP-style `application/sdp`). The answer carries the
        session's secret (`secret`, and the `Parley-Session-Secret` header): the bearer token
        that reads or ends this session."""
        access.require_creator(request)
        access.count_creation(request)
        manager = manager_of(request)
        whip = media_type(request.headers.get("content-type")) == SDP_TYPE
        offer = _parse_offer(await request.body(), whip)
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
        headers = {"Location": f"/v1/sessions/{session.id}", SECRET_HEADER: session.secret}
        if whip:
            return Response(answer, 201, headers=headers, media_type=SDP_TYPE)
        body = {"id": session.id, "sdp": answer, "type": "answer", "secret": session.secret}
        return JSONResponse(body, 201, headers=headers)

    @app.get("/v1/sessions")
    async def list_sessions(request: Request) -> dict[str, Any]:
        access.require_admin(request)
        manager = manager_of(request)
        return {
            "sessions": [s.info().as_dict() for s in manager.sessions.values()],
            "capacity": manager.capacity,
        }

    @app.get("/v1/sessions/{session_id}")
    async def get_session(session_id: str, request: Request) -> dict[str, Any]:
        return session_of(request, session_id).info().as_dict()

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    async def delete_session(session_id: str, request: Request) -> Response:
        session = session_of(request, session_id)
        if not await manager_of(request).remove(session.id):
            raise HTTPException(404, f"no session {session_id!r}")
        return Response(status_code=204)

    @app.post("/v1/drain")
    async def drain(request: Request) -> dict[str, Any]:
        """Stop admitting; live sessions go on. The pod stays up (the operator deletes it once
        it reports no sessions); SIGTERM drains the same way and then exits."""
        access.require_admin(request)
        manager = manager_of(request)
        manager.drain()
        return {"draining": True, "active_sessions": len(manager.sessions)}

    @app.delete("/v1/drain")
    async def undrain(request: Request) -> dict[str, Any]:
        access.require_admin(request)
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
    for field in ("sdp", "system_prompt", "voice"):
        if field in offer and not _is_unicode(offer[field]):
            raise HTTPException(422, f"{field!r} is not valid Unicode (a lone surrogate)")
    return offer


def _is_unicode(text: str) -> bool:
    """JSON may escape a lone surrogate (`"\\ud800"`), which no UTF-8 text can hold."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
