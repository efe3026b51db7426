"""Loading the models once per process, and building each app's clients around them.

`Models` (VAD, ASR, Piper) are loop-agnostic and may be shared by several apps (the tests do);
network clients (LLM, remote TTS) belong to the event loop of the app that creates them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from parley.pcm import INPUT_RATE
from parley.scos import BackpressureLevel
from parley_runtime.agent import Services
from parley_runtime.asr import SpeechRecognizer
from parley_runtime.config import RuntimeSettings
from parley_runtime.llm import ChatClient, SlotPool
from parley_runtime.vad import SileroVAD
from parley_tts import HTTPSpeechClient, PiperTTS, TTSService

log = logging.getLogger(__name__)


@dataclass
class Models:
    vad: SileroVAD
    asr: SpeechRecognizer
    piper: PiperTTS | None


async def load_models(settings: RuntimeSettings) -> Models:
    """Load and warm VAD, ASR and (unless a TTS server is configured) Piper, off the event
    loop. Raises `ModelNotFoundError` naming the missing package or path."""
    started = time.monotonic()
    vad, asr = await asyncio.gather(
        asyncio.to_thread(SileroVAD),
        asyncio.to_thread(
            SpeechRecognizer,
            settings.asr_model,
            settings.asr_device,
            settings.asr_compute_type,
            settings.asr_threads,
            1,
            settings.asr_window,
        ),
    )
    piper = None if settings.tts_url else await asyncio.to_thread(PiperTTS, settings.tts_voice)
    await asr.transcribe(np.zeros(INPUT_RATE, dtype=np.int16))
    if piper is not None:
        await piper.warm()
    log.info("models loaded and warmed in %.1f s", time.monotonic() - started)
    return Models(vad=vad, asr=asr, piper=piper)


def build_services(
    settings: RuntimeSettings,
    models: Models,
    backpressure: Callable[[], BackpressureLevel] = lambda: BackpressureLevel.NORMAL,
) -> Services:
    llm = ChatClient(
        settings.llm_url,
        settings.llm_model,
        api_key=settings.llm_api_key,
        max_tokens=settings.llm_max_tokens,
        temperature=settings.llm_temperature,
        seed=settings.llm_seed,
        frequency_penalty=settings.llm_frequency_penalty,
        timeout_s=settings.llm_timeout_s,
    )
    tts: TTSService
    if settings.tts_url:
        tts = HTTPSpeechClient(settings.tts_url, settings.tts_model, settings.tts_voice)
    elif models.piper is not None:
        tts = models.piper
    else:
        raise ValueError("no TTS: set tts_url or load Piper")
    return Services(
        asr=models.asr,
        vad=models.vad,
        tts=tts,
        llm=llm,
        llm_slots=SlotPool(settings.llm_slots),
        backpressure=backpressure,
    )


async def close_clients(services: Services) -> None:
    await services.llm.aclose()
    if isinstance(services.tts, HTTPSpeechClient):
        await services.tts.aclose()


def close_models(models: Models) -> None:
    models.asr.close()
    if models.piper is not None:
        models.piper.close()
