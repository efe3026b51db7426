"""Streaming client for any OpenAI-compatible `/v1/chat/completions` server (vLLM, llama.cpp).

Cancelling the task that iterates `stream()` closes the HTTP response, which is how a server
like vLLM learns to stop generating.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx


class LLMError(RuntimeError):
    """The LLM server could not be reached or failed mid-answer."""


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "",
        max_tokens: int = 60,
        temperature: float = 0.3,
        seed: int | None = None,
        frequency_penalty: float = 0.0,
        timeout_s: float = 20.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.frequency_penalty = frequency_penalty
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
        )

    async def stream(
        self,
        messages: list[dict[str, str]],
        max_tokens: int | None = None,
        slot: int | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield content deltas as they arrive (`max_tokens`: this request's cap, if lower;
        `slot`: the llama-server slot to run in, see `SlotPool`)."""
        cap = min(max_tokens or self.max_tokens, self.max_tokens)
        body = self._body(messages, cap, stream=True, slot=slot)
        finished = False
        try:
            async with self._http.stream("POST", "chat/completions", json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread())[:300].decode(errors="replace")
                    raise LLMError(
                        f"LLM server {self.base_url} answered {response.status_code}: {detail}"
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        finished = True
                        break
                    for choice in json.loads(data).get("choices", []):
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            yield content
                        if choice.get("finish_reason"):
                            finished = True
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM server {self.base_url} failed: {exc!r}") from exc
        except json.JSONDecodeError as exc:
            raise LLMError(f"LLM server {self.base_url} sent a malformed event: {exc}") from exc
        if not finished:
            raise LLMError(f"LLM server {self.base_url} ended the stream before finishing")

    async def prefill(self, messages: list[dict[str, str]], slot: int | None = None) -> None:
        """Have the server read `messages` now and keep them in its prefix cache (llama.cpp's
        slot cache, vLLM's automatic prefix caching), so that the first question that starts
        with them is read from where they end. One token is generated and thrown away."""
        try:
            response = await self._http.post(
                "chat/completions", json=self._body(messages, 1, stream=False, slot=slot)
            )
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM server {self.base_url} failed: {exc!r}") from exc
        if response.status_code != 200:
            raise LLMError(
                f"LLM server {self.base_url} answered {response.status_code}: {response.text[:300]}"
            )

    def _body(
        self, messages: list[dict[str, str]], max_tokens: int, stream: bool, slot: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": stream,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        if self.frequency_penalty:
            body["frequency_penalty"] = self.frequency_penalty
        if slot is not None:
            body["id_slot"] = slot  # llama.cpp's extension
        return body

    async def aclose(self) -> None:
        await self._http.aclose()
