"""A scripted OpenAI-compatible speech server on a real socket, for fault tests only.

It streams real Piper audio as raw PCM (`X-Sample-Rate` header), and can be told to fail:
die mid-stream or answer 500. The real TTS server is Parley's own (`parley tts serve`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from parley_tts import PiperTTS
from tests.support.threaded_server import ThreadedServer


@dataclass
class Script:
    modes: list[str] = field(default_factory=list)
    requests: int = 0

    def next_mode(self) -> str:
        self.requests += 1
        return self.modes.pop(0) if self.modes else "ok"


def make_app(script: Script, piper: PiperTTS) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/audio/speech")
    async def speak(request: Request) -> Response:
        body = await request.json()
        mode = script.next_mode()
        if mode == "http_500":
            return JSONResponse({"error": "scripted failure"}, status_code=500)

        async def pcm() -> AsyncIterator[bytes]:
            sent = 0
            async for chunk in piper.synthesize(body["input"]):
                data = chunk.tobytes()
                for start in range(0, len(data), 4096):
                    if mode == "die_mid_stream" and sent >= 8192:
                        raise RuntimeError("scripted crash mid-stream")
                    yield data[start : start + 4096]
                    sent += 4096

        headers = {"X-Sample-Rate": str(piper.sample_rate)}
        return StreamingResponse(pcm(), media_type="audio/pcm", headers=headers)

    return app


class ScriptedTTSServer(ThreadedServer):
    def __init__(self, piper: PiperTTS) -> None:
        self.script = Script()
        super().__init__(make_app(self.script, piper))
