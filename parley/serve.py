"""`parley runtime serve` and `parley tts serve`: each app under uvicorn, settings from flags
over `PARLEY_*` environment variables."""

from __future__ import annotations

import logging
from collections.abc import Callable

import uvicorn

log = logging.getLogger("parley")


def serve_runtime(overrides: dict[str, object], on_ready: Callable[[], None] | None = None) -> int:
    from parley_runtime import RuntimeSettings, create_app
    from parley_runtime.models import ModelNotFoundError, check_models

    settings = RuntimeSettings(**overrides)  # type: ignore[arg-type]
    try:
        check_models(settings.asr_model, None if settings.tts_url else settings.tts_voice)
    except ModelNotFoundError as exc:
        log.error("cannot start: %s", exc)
        return 1
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="on",
        )
    )
    if on_ready is not None:
        original_startup = server.startup

        async def startup(sockets: object = None) -> None:
            await original_startup(sockets)  # type: ignore[arg-type]
            if server.started:
                on_ready()

        server.startup = startup  # type: ignore[method-assign]
    server.run()
    return 0 if server.started else 1


def serve_tts(overrides: dict[str, object]) -> int:
    from parley_tts.config import TTSSettings
    from parley_tts.server import create_tts_app
    from parley_tts.voices import ModelNotFoundError
    from parley_tts.xtts import check_xtts_dir

    settings = TTSSettings(**overrides)  # type: ignore[arg-type]
    try:
        if settings.xtts_model_dir or settings.default_model == "xtts":
            check_xtts_dir(settings.xtts_model_dir)
    except ModelNotFoundError as exc:
        log.error("cannot start: %s", exc)
        return 1
    app = create_tts_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0
