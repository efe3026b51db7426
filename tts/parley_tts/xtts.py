"""Coqui XTTS-v2 (the `coqui-tts` package) on a GPU, with streaming inference.

Weights come from a local directory (a volume in a cluster) and are never downloaded; torch
and coqui-tts are imported only when XTTS is actually configured, so a Piper-only server runs
without them. Every failure to load says what is missing.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from parley_tts.base import TTSError, TTSService
from parley_tts.voices import ModelNotFoundError
from parley_tts.vram import VramError, VramGuard

XTTS_FILES = ("config.json", "model.pth", "vocab.json", "speakers_xtts.pth")
XTTS_RATE = 24_000


def check_xtts_dir(model_dir: str) -> Path:
    """The checkpoint directory, or `ModelNotFoundError` listing exactly what is missing."""
    if not model_dir:
        raise ModelNotFoundError("XTTS is not configured: set PARLEY_TTS_XTTS_MODEL_DIR")
    path = Path(model_dir).expanduser()
    missing = [name for name in XTTS_FILES if not (path / name).exists()]
    if missing:
        raise ModelNotFoundError(
            f"XTTS-v2 weights incomplete in {path}: missing {', '.join(missing)} "
            f"(mount the checkpoint there; Parley never downloads weights)"
        )
    return path


def import_torch() -> Any:
    try:
        import torch
        from TTS.tts.models.xtts import Xtts  # noqa: F401
    except ImportError as exc:
        raise VramError(
            f"XTTS needs torch and the coqui-tts package ({exc.name} is not installed): "
            "install parley with the 'xtts' extra in the GPU image"
        ) from exc
    return torch


class XTTSBackend(TTSService):
    name = "xtts"
    sample_rate = XTTS_RATE

    def __init__(self, model: Any, torch: Any) -> None:
        self._model = model
        self._torch = torch
        self._speakers: dict[str, Any] = dict(model.speaker_manager.speakers)

    def voices(self) -> list[str]:
        return sorted(self._speakers)

    def close(self) -> None:
        """Drop the model and hand its GPU memory back (torch caches freed blocks, and the
        admission check counts reserved memory)."""
        self._model = None
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    async def synthesize(
        self, text: str, voice: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        name = voice or next(iter(sorted(self._speakers)))
        if name not in self._speakers:
            raise TTSError(f"unknown XTTS speaker {name!r}; known: {self.voices()}")
        speaker = self._speakers[name]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[np.ndarray | BaseException | None] = asyncio.Queue(maxsize=4)
        stop = threading.Event()

        def produce() -> None:
            try:
                with self._torch.inference_mode():
                    for chunk in self._model.inference_stream(
                        text,
                        "en",
                        speaker["gpt_cond_latent"],
                        speaker["speaker_embedding"],
                        speed=speed,
                        enable_text_splitting=False,
                    ):
                        if stop.is_set():
                            return
                        pcm = (chunk.float().clamp(-1, 1).cpu().numpy() * 32767).astype(np.int16)
                        asyncio.run_coroutine_threadsafe(queue.put(pcm), loop).result()
            except BaseException as exc:
                asyncio.run_coroutine_threadsafe(queue.put(exc), loop).result()
            finally:
                asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

        worker = threading.Thread(target=produce, name="xtts", daemon=True)
        worker.start()
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise TTSError(f"XTTS failed: {item!r}") from item
                yield item
        finally:
            stop.set()
            while not queue.empty():  # free a producer blocked on a full queue
                queue.get_nowait()


def load_xtts(model_dir: str, device: str, cap_gib: float | None, need_gib: float) -> XTTSBackend:
    """Load XTTS-v2 under the VRAM cap. Raises `ModelNotFoundError` (weights) or `VramError`
    (no torch, no CUDA, over the cap) with a readable reason."""
    path = check_xtts_dir(model_dir)
    torch = import_torch()
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    if device == "cuda":
        guard = VramGuard(torch.cuda, cap_gib)
        guard.apply_cap()
        guard.admit("XTTS-v2", need_gib)
    config = XttsConfig()
    config.load_json(str(path / "config.json"))
    model = Xtts.init_from_config(config)
    model.load_checkpoint(config, checkpoint_dir=str(path), use_deepspeed=False)
    model.to(device)
    model.eval()
    return XTTSBackend(model, torch)
