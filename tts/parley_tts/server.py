"""`parley tts serve`: an OpenAI-compatible streaming speech server.

`POST /v1/audio/speech` streams audio sentence by sentence, so the first bytes leave while the
rest is still being synthesized. Models are held by the `ModelManager`; at most `max_streams`
syntheses run at once, `max_queue` more may wait, and beyond that the answer is `503` with
`Retry-After`. A client that hangs up stops its synthesis at the next sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from parley.pcm import SPEECH_RATE, Resampler
from parley_tts.base import TTSService
from parley_tts.catalog import Catalog, CatalogError
from parley_tts.chunker import SentenceChunker
from parley_tts.config import TTSSettings
from parley_tts.formats import MEDIA_TYPES, streaming_wav_header
from parley_tts.manager import ModelManager
from parley_tts.metrics import TTSMetrics
from parley_tts.piper import PiperTTS
from parley_tts.voices import ModelNotFoundError
from parley_tts.vram import VramError
from parley_tts.xtts import XTTSBackend, check_xtts_dir, load_xtts

log = logging.getLogger(__name__)


class SpeechRequest(BaseModel):
    """OpenAI's speech request; `model` and `voice` default to the server's defaults."""

    model: str | None = None
    input: str = Field(min_length=1)
    voice: str | None = None
    response_format: Literal["pcm", "wav"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)


def split_sentences(text: str) -> list[str]:
    chunker = SentenceChunker()
    return [*chunker.push(text), *chunker.flush()]


class _ManagedStream(StreamingResponse):
    """A streaming response that always runs `cleanup`, even when the client is gone before
    the first byte (then the body iterator never starts, and its `finally` never runs)."""

    def __init__(
        self, body: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]], **kw: Any
    ):
        super().__init__(body, **kw)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


def create_tts_app(settings: TTSSettings | None = None) -> FastAPI:
    settings = settings or TTSSettings()
    catalog = Catalog.from_settings(settings)
    registry = CollectorRegistry()
    metrics = TTSMetrics(registry)
    executor = ThreadPoolExecutor(settings.piper_threads, thread_name_prefix="piper")

    async def load(key: str) -> TTSService:
        if key == "xtts":
            return await asyncio.to_thread(
                load_xtts,
                settings.xtts_model_dir,
                settings.xtts_device,
                settings.vram_cap_gib,
                settings.xtts_vram_gib,
            )
        voice = catalog.piper_voices[key.split(":", 1)[1]]
        backend = await asyncio.to_thread(PiperTTS, voice, executor=executor)
        await backend.warm()
        return backend

    def unload(key: str, backend: TTSService) -> None:
        if isinstance(backend, PiperTTS | XTTSBackend):
            backend.close()

    manager: ModelManager[TTSService] = ModelManager(
        catalog.keys(),
        load,
        unload,
        max_resident=settings.max_resident,
        idle_ttl_s=settings.idle_ttl_s,
        max_parallel_loads=settings.max_parallel_loads,
    )
    streams = asyncio.Semaphore(settings.max_streams)
    state = {"ready": False, "waiting": 0, "active": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        evictions = asyncio.create_task(manager.run_evictions(min(5.0, settings.idle_ttl_s / 2)))
        try:
            if catalog.xtts:
                check_xtts_dir(settings.xtts_model_dir)  # weights missing: fail before serving
            await manager.preload([catalog.default_key()], pin=True)
            await manager.preload([k for k in settings.preload if k != catalog.default_key()])
            state["ready"] = True
            yield
        finally:
            evictions.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await evictions
            manager.close()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="Parley TTS", version="0.1.0", lifespan=lifespan)
    app.state.manager = manager
    app.state.metrics = metrics
    metrics.observe_state(manager, 0, 0)
    app.state.settings = settings

    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest, request: Request) -> Response:
        model = body.model or catalog.default_model
        text = body.input.strip()
        if not text:
            raise HTTPException(422, "input is empty")
        if len(body.input) > settings.max_input_chars:
            raise HTTPException(
                413,
                f"input is {len(body.input)} characters; the limit is {settings.max_input_chars}",
            )
        try:
            key = catalog.key(model, body.voice)
        except CatalogError as exc:
            raise HTTPException(404, str(exc)) from exc
        if state["active"] + state["waiting"] >= settings.max_streams + settings.max_queue:
            metrics.requests.labels(model, "rejected").inc()
            raise HTTPException(
                503,
                f"saturated: {state['active']} streams running, {state['waiting']} waiting",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        state["waiting"] += 1
        try:
            await streams.acquire()
        finally:
            state["waiting"] -= 1
        state["active"] += 1
        stack = AsyncExitStack()
        released = False

        async def cleanup() -> None:
            nonlocal released
            if not released:
                released = True
                await stack.aclose()
                state["active"] -= 1
                streams.release()

        xtts_voice = body.voice or catalog.default_xtts_voice()
        try:
            backend = await stack.enter_async_context(manager.use(key))
            if model == "xtts" and xtts_voice and xtts_voice not in backend.voices():
                raise CatalogError(
                    f"unknown voice {xtts_voice!r} for xtts; known voices: {backend.voices()}"
                )
        except CatalogError as exc:
            await cleanup()
            raise HTTPException(404, str(exc)) from exc
        except (ModelNotFoundError, VramError) as exc:
            await cleanup()
            metrics.requests.labels(model, "refused").inc()
            raise HTTPException(503, f"cannot load {model}: {exc}") from exc
        except BaseException:
            await cleanup()
            raise

        voice = xtts_voice if model == "xtts" else None
        audio = _synthesize(backend, text, voice, body.speed, body.response_format, model)
        return _ManagedStream(
            audio,
            cleanup,
            media_type=MEDIA_TYPES[body.response_format],
            headers={"X-Sample-Rate": str(SPEECH_RATE), "X-Audio-Format": "s16le-mono"},
        )

    async def _synthesize(
        backend: TTSService, text: str, voice: str | None, speed: float, fmt: str, model: str
    ) -> AsyncIterator[bytes]:
        started = time.monotonic()
        resampler = Resampler(SPEECH_RATE)
        samples = 0
        outcome = "ok"
        if fmt == "wav":
            yield streaming_wav_header()
        try:
            for sentence in split_sentences(text):
                async for pcm in backend.synthesize(sentence, voice, speed):
                    out = resampler.pcm(pcm, backend.sample_rate)
                    if out.size:
                        if samples == 0:
                            metrics.ttfb.labels(model).observe(time.monotonic() - started)
                        samples += out.size
                        yield out.tobytes()
                metrics.sentences.labels(model).inc()
            yield resampler.flush().tobytes()
            if samples:
                metrics.rtf.labels(model).observe(
                    (time.monotonic() - started) / (samples / SPEECH_RATE)
                )
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:  # a backend failure ends this stream, not the server
            outcome = "error"
            metrics.stream_errors.labels(model).inc()
            log.warning("synthesis failed mid-stream (%s): %r", model, exc)
        finally:
            metrics.requests.labels(model, outcome).inc()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = []
        for model in catalog.models:
            if model == "piper":
                voices = sorted(catalog.piper_voices)
            else:
                xtts = manager.loaded("xtts")
                voices = xtts.voices() if xtts is not None else []
            data.append(
                {
                    "id": model,
                    "object": "model",
                    "owned_by": "parley",
                    "voices": voices,
                    "sample_rate": SPEECH_RATE,
                    "formats": sorted(MEDIA_TYPES),
                }
            )
        return {"object": "list", "data": data}

    @app.get("/v1/audio/voices")
    async def voices() -> dict[str, Any]:
        listing = await models()
        return {
            "voices": [{"model": m["id"], "voice": v} for m in listing["data"] for v in m["voices"]]
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = state["ready"]
        return JSONResponse(
            {"ready": ready, "resident": manager.resident(), "default": catalog.default_key()},
            200 if ready else 503,
        )

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.observe_state(manager, state["active"], state["waiting"])
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
