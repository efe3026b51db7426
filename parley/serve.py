"""`parley runtime serve` and `parley tts serve`: each app under uvicorn, settings from flags
over `PARLEY_*` environment variables.

The runtime treats SIGTERM as Kubernetes means it: drain. It stops admitting, lets live
conversations end within `--drain-timeout-s`, cuts (and counts) those still going at the
deadline, then exits 0. A second SIGTERM exits at once (status 1). SIGINT (Ctrl-C) stops at
once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

import pydantic
import uvicorn
from fastapi import FastAPI

log = logging.getLogger("parley")
S = TypeVar("S", bound=pydantic.BaseModel)


class _DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM → drain → exit instead of an immediate shutdown."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._terms = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._terms += 1
        if self._terms > 1:
            # at once means at once: no lifespan, no thread joins, no sessions closed
            log.warning("second SIGTERM: exiting now, live sessions dropped")
            sys.stderr.flush()
            os._exit(1)
        log.warning("SIGTERM: draining before exit")
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain = asyncio.create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        from parley_runtime.server import drain_for_exit

        try:
            await drain_for_exit(self._app)
        finally:
            self.should_exit = True


def _settings(kind: type[S], overrides: dict[str, object]) -> S | None:
    """The settings from the flags and `PARLEY_*` variables, or None after saying what is
    wrong with them (one line per field, not a traceback)."""
    try:
        return kind(**overrides)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        log.error("cannot start: invalid settings: %s", problems)
        return None


def serve_runtime(
    overrides: dict[str, object],
    on_ready: Callable[[], None] | None = None,
    drain_on_sigterm: bool = True,
) -> int:
    from parley_runtime import RuntimeSettings, create_app
    from parley_runtime.models import ModelNotFoundError, check_models

    settings = _settings(RuntimeSettings, overrides)
    if settings is None:
        return 1
    try:
        check_models(settings.asr_model, None if settings.tts_url else settings.tts_voice)
    except ModelNotFoundError as exc:
        log.error("cannot start: %s", exc)
        return 1
    app = create_app(settings)
    # Who the client is behind a proxy is the runtime's call (PARLEY_TRUSTED_PROXIES), not
    # uvicorn's (by default it believes X-Forwarded-For from 127.0.0.1).
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,
    )
    server = _DrainingServer(config, app) if drain_on_sigterm else uvicorn.Server(config)
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

    settings = _settings(TTSSettings, overrides)
    if settings is None:
        return 1
    try:
        if settings.xtts_model_dir or settings.default_model == "xtts":
            check_xtts_dir(settings.xtts_model_dir)
    except ModelNotFoundError as exc:
        log.error("cannot start: %s", exc)
        return 1
    app = create_tts_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0
