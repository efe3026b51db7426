"""`parley tts serve`: an OpenAI-compatible streaming speech server.

`POST /v1/audio/speech` streams audio sentence by sentence, so the first bytes leave while the
rest is still being synthesized, in any of OpenAI's formats, and takes OpenAI's model and voice
names, so the official SDK works unchanged. Models are held by the `ModelManager`; at most
`max_streams` syntheses run at once, `max_queue` more may wait, and beyond that the answer is
`503` with `Retry-After`. A client that hangs up stops its synthesis at the next sentence; a
backend that fails once audio has started aborts the response, so the client sees an
incomplete body rather than a short one that looks whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from parley.pcm import SPEECH_RATE, Resampler
from parley.security.bodies import BodyPolicy
from parley.security.docs import api_docs
from parley_tts.base import TTSService
from parley_tts.catalog import Catalog, CatalogError
from parley_tts.chunker import SentenceChunker
from parley_tts.config import TTSSettings
from parley_tts.formats import FORMATS, ResponseFormat, make_encoder
from parley_tts.manager import ModelManager
from parley_tts.metrics import TTSMetrics
from parley_tts.openai_names import OPENAI_MODELS
from parley_tts.piper import PiperTTS
from parley_tts.voices import ModelNotFoundError
from parley_tts.vram import VramError
from parley_tts.xtts import XTTSBackend, check_xtts_dir, load_xtts

log = logging.getLogger(__name__)
MAX_LOGGED_FIELDS = 32  # ignored fields are logged once per name, for this many names


class VoiceRef(BaseModel):
    """OpenAI's form for a custom voice, `{"id": "..."}`; here the id names a voice."""

    id: str


class SpeechRequest(BaseModel):
    """OpenAI's speech request; `model` and `voice` default to the server's defaults. Fields
    this server does not act on (`instructions`, and any unknown one) are accepted and
    logged."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str = Field(min_length=1)
    voice: str | VoiceRef | None = None
    response_format: ResponseFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] = "audio"

    @property
    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice

    def ignored(self) -> list[str]:
        """The fields sent that change nothing here."""
        return (["instructions"] if self.instructions else []) + sorted(self.model_extra or {})


class StreamAborted(RuntimeError):
    """Synthesis failed after the response started: raised out of the body so the server
    closes the connection without the final chunk, and the client sees an incomplete read."""


def speakable(text: str) -> str:
    """The input with its control characters (NUL, escapes, ...) as spaces, trimmed: none of
    them is speech, and Piper fails on some."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text).strip()


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


def error_response(
    status: int, detail: Any, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """FastAPI's `{"detail": ...}` and OpenAI's `{"error": {"message": ...}}` in one body, so
    both plain HTTP clients and the OpenAI SDK show the reason."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    error = {"message": message, "type": kind, "param": None, "code": None}
    return JSONResponse({"detail": detail, "error": error}, status, headers=headers)


def validation_message(errors: Sequence[Any]) -> str:
    """`input: String should have at least 1 character; speed: ...`"""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors
    )


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
    logged_ignored: set[str] = set()

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

    app = FastAPI(
        title="Parley TTS", version="0.1.0", lifespan=lifespan, **api_docs(settings.api_docs)
    )
    # Bodies are JSON and small: anything else is refused before FastAPI reads and parses it.
    app.add_middleware(
        BodyPolicy,
        max_bytes=settings.max_body_bytes,
        media_types=("application/json",),
        error_response=lambda status, message: error_response(status, message, message),
    )
    app.state.manager = manager
    app.state.metrics = metrics
    metrics.observe_state(manager, 0, 0)
    app.state.settings = settings

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Without the values sent: they can be long, and need not be valid Unicode (a lone
        # surrogate, which no JSON answer can carry).
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return error_response(422, jsonable_encoder(errors), validation_message(errors))

    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest, request: Request) -> Response:
        if body.stream_format == "sse":
            raise HTTPException(
                422, "stream_format 'sse' is not supported; the audio itself is streamed"
            )
        for name in body.ignored():
            if name not in logged_ignored and len(logged_ignored) < MAX_LOGGED_FIELDS:
                logged_ignored.add(name)
                log.info("ignoring the request field %.40r: this server does not act on it", name)
        text = speakable(body.input)
        if not text:
            raise HTTPException(422, "input is empty")
        if len(body.input) > settings.max_input_chars:
            raise HTTPException(
                413,
                f"input is {len(body.input)} characters; the limit is {settings.max_input_chars}",
            )
        try:
            model = catalog.model(body.model)
            key = catalog.key(model, body.voice_name)
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

        voice: str | None = None  # Piper: the voice is the model
        try:
            backend = await stack.enter_async_context(manager.use(key))
            if model == "xtts":
                speakers = backend.voices()
                voice = catalog.voice(model, body.voice_name, speakers)
                voice = voice or catalog.default_xtts_voice()
                if voice and voice not in speakers:
                    raise CatalogError(
                        f"unknown voice {voice!r} for xtts; known voices: {speakers}"
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

        fmt = body.response_format
        headers = {"X-Sample-Rate": str(SPEECH_RATE)}
        if fmt in ("pcm", "wav"):
            headers["X-Audio-Format"] = "s16le-mono"
        audio = _synthesize(backend, text, voice, body.speed, fmt, model)
        return _ManagedStream(audio, cleanup, media_type=FORMATS[fmt].media_type, headers=headers)

    async def _synthesize(
        backend: TTSService,
        text: str,
        voice: str | None,
        speed: float,
        fmt: ResponseFormat,
        model: str,
    ) -> AsyncIterator[bytes]:
        started = time.monotonic()
        resampler = Resampler(SPEECH_RATE)
        samples = 0
        outcome = "ok"
        encoder = make_encoder(fmt)
        try:
            if header := encoder.start():
                yield header
            for sentence in split_sentences(text):
                async for pcm in backend.synthesize(sentence, voice, speed):
                    out = resampler.pcm(pcm, backend.sample_rate)
                    if out.size:
                        if samples == 0:
                            metrics.ttfb.labels(model).observe(time.monotonic() - started)
                        samples += out.size
                        if data := encoder.encode(out):
                            yield data
                metrics.sentences.labels(model).inc()
            yield encoder.encode(resampler.flush()) + encoder.finish()
            if samples:
                metrics.rtf.labels(model).observe(
                    (time.monotonic() - started) / (samples / SPEECH_RATE)
                )
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:  # a backend failure aborts this stream, not the server
            outcome = "error"
            metrics.stream_errors.labels(model).inc()
            log.warning("synthesis failed mid-stream (%s), aborting the response: %r", model, exc)
            raise StreamAborted(f"synthesis failed mid-stream ({model}): {exc!r}") from exc
        finally:
            encoder.close()
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
                    "aliases": list(OPENAI_MODELS) if model == catalog.default_model else [],
                    "voices": voices,
                    "sample_rate": SPEECH_RATE,
                    "formats": list(FORMATS),
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
