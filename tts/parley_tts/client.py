"""Client for an OpenAI-compatible `/v1/audio/speech` server streaming raw PCM.

The server states its PCM rate in the `X-Sample-Rate` response header; without it we assume
OpenAI's `pcm` format (24 kHz, 16-bit little-endian, mono). A stream at another rate is
resampled to the client's `sample_rate`: one client serves every session at once, so the rate
of one response must never change how another is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np

from parley.pcm import Resampler
from parley_tts.base import TTSError, TTSService

OPENAI_PCM_RATE = 24_000


class HTTPSpeechClient(TTSService):
    name = "http"

    def __init__(
        self, base_url: str, model: str = "piper", voice: str = "", timeout_s: float = 20.0
    ):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model = model
        self.voice = voice
        self.sample_rate = OPENAI_PCM_RATE
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))

    def voices(self) -> list[str]:
        return [self.voice] if self.voice else []

    async def synthesize(
        self, text: str, voice: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        body = {
            "model": self.model,
            "input": text,
            "voice": voice or self.voice,
            "response_format": "pcm",
            "speed": speed,
        }
        odd = b""
        try:
            async with self._http.stream(
                "POST", f"{self.base_url}/audio/speech", json=body
            ) as response:
                if response.status_code != 200:
                    detail = (await response.aread())[:300].decode(errors="replace")
                    raise TTSError(
                        f"TTS server {self.base_url} answered {response.status_code}: {detail}"
                    )
                rate = int(response.headers.get("x-sample-rate", OPENAI_PCM_RATE))
                resampler = Resampler(self.sample_rate) if rate != self.sample_rate else None
                async for data in response.aiter_bytes():
                    data = odd + data
                    whole = len(data) // 2 * 2
                    odd = data[whole:]
                    if whole:
                        pcm = np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)
                        if resampler is not None:
                            pcm = resampler.pcm(pcm, rate)
                        if pcm.size:
                            yield pcm
                if resampler is not None and (tail := resampler.flush()).size:
                    yield tail
        except httpx.HTTPError as exc:
            raise TTSError(f"TTS server {self.base_url} failed: {exc!r}") from exc

    async def aclose(self) -> None:
        await self._http.aclose()
