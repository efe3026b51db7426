"""The contract every TTS backend keeps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

import numpy as np


class TTSError(RuntimeError):
    """Synthesis failed (a server down, a backend exception)."""


class TTSService(ABC):
    """Streams mono int16 PCM at `sample_rate` for a piece of text, first audio as early as
    the backend can give it. Cancelling the consuming task stops synthesis."""

    sample_rate: int
    name: str

    @abstractmethod
    def synthesize(
        self, text: str, voice: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[np.ndarray]: ...

    async def warm(self) -> None:
        """Run one short synthesis so the first real request does not pay for it."""
        async for _ in self.synthesize("Hello."):
            pass

    def voices(self) -> list[str]:
        return []

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass
