"""Runs runtime apps on real sockets in one background event loop, sharing loaded models.

The runtime gets its own thread and loop, as it would in its own process, so the test's
WebRTC peer and the server do not share a scheduler; models load once for the whole suite.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from parley_bench.child_server import free_port
from parley_runtime import RuntimeSettings, create_app
from parley_runtime.services import Models, close_models, load_models

T = TypeVar("T")


class RunningApp:
    def __init__(
        self, app: FastAPI, server: uvicorn.Server, port: int, task: asyncio.Task[None]
    ) -> None:
        self.app = app
        self.task = task
        self.server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


class RuntimeHost:
    def __init__(self, base: RuntimeSettings) -> None:
        self.base = base
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="runtime")
        self._thread.start()
        self.models: Models = self.call(load_models(base))
        self._apps: list[RunningApp] = []

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, **overrides: Any) -> RunningApp:
        port = free_port()
        settings = self.base.model_copy(update={"port": port, **overrides})
        app = create_app(settings, self.models)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )

        async def serve() -> asyncio.Task[None]:
            task = self.loop.create_task(server.serve())
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            return task

        task = self.call(serve(), timeout=60)
        running = RunningApp(app, server, port, task)
        self._apps.append(running)
        return running

    def stop(self, running: RunningApp) -> None:
        async def shutdown() -> None:
            running.server.should_exit = True
            await running.task

        self.call(shutdown(), timeout=30)
        self._apps.remove(running)

    def close(self) -> None:
        for running in list(self._apps):
            self.stop(running)
        close_models(self.models)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
