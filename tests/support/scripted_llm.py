"""A scripted OpenAI-compatible chat server on a real socket, for fault tests only.

The real LLM (llama.cpp) serves every conversation test; this one exists to fail on purpose:
answer normally, die mid-stream, or refuse with an HTTP error, as each test scripts it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.support.threaded_server import ThreadedServer


@dataclass
class Script:
    """What the next streamed requests get: 'ok', 'die_mid_stream', 'http_500' or 'stall' (no
    token for a minute). `bodies` keeps every streamed request's body; `prefills` those of the
    requests that are not streamed (a session's prefill), which are answered and script nothing."""

    modes: list[str] = field(default_factory=list)
    answer: str = "Paris is the capital of France. It is a lovely city to visit."
    requests: int = 0
    bodies: list[dict[str, object]] = field(default_factory=list)
    prefills: list[dict[str, object]] = field(default_factory=list)

    def next_mode(self) -> str:
        self.requests += 1
        return self.modes.pop(0) if self.modes else "ok"


def _chunk(content: str | None, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [choice]}) + "\n\n"


def make_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> object:
        body = await request.json()
        if body.get("stream") is not True:
            script.prefills.append(body)
            message = {"role": "assistant", "content": script.answer.split(" ")[0]}
            return {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
        script.bodies.append(body)
        mode = script.next_mode()
        if mode == "http_500":
            return JSONResponse({"error": "scripted failure"}, status_code=500)

        async def stream():  # type: ignore[no-untyped-def]
            if mode == "stall":
                await asyncio.sleep(60)
            words = script.answer.split(" ")
            for i, word in enumerate(words):
                if mode == "die_mid_stream" and i == len(words) // 2:
                    raise RuntimeError("scripted crash mid-stream")
                yield _chunk(word + ("" if i == len(words) - 1 else " "))
                await asyncio.sleep(0.01)
            yield _chunk(None, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


class ScriptedLLMServer(ThreadedServer):
    def __init__(self) -> None:
        self.script = Script()
        super().__init__(make_app(self.script))
