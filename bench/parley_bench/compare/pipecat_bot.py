"""A stock Pipecat voice bot with Parley's embedded models, for `parley bench compare`.

It runs only under the Pipecat virtual environment that `pipecat_env.py` installs (Pipecat is
never a dependency of Parley), and it is built the way Pipecat's own 1.x examples build a bot,
so the benchmark measures Pipecat as its users get it:

- transport: SmallWebRTC (aiortc), audio in and out, no video; signalling as in Pipecat's
  runner, `POST /api/offer` with `{"sdp", "type": "offer", "pc_id"?}` answered by
  `{"sdp", "type": "answer", "pc_id"}`;
- turn-taking: Pipecat's default, Silero VAD with its default `VADParams` and the default user
  turn stop strategy, Smart Turn v3 (`LocalSmartTurnAnalyzerV3`, the ONNX model in the wheel)
  with its default `SmartTurnParams`; interruptions on (the default);
- services: `WhisperSTTService` (faster-whisper, CPU int8) on a local model directory,
  `OpenAILLMService` on the given OpenAI-compatible server, `PiperTTSService` (Piper in-process)
  on a local voice file.

Only the model files and the LLM's sampling (Parley's `max_tokens`, `temperature` and
`frequency_penalty`, and the bench's seed) are set to match Parley; nothing is tuned. Every
service is created per connection, as in Pipecat's examples, and run by its own
`WorkerRunner`. The models are loaded and run once at startup, before the port opens (so
`GET /healthz` answering means ready), so that the first turn does not pay for cold caches.
With `--host` a specific address (127.0.0.1 for the bench), ICE host candidates use only that
address: aioice skips loopback otherwise. No STUN server is set.

    python pipecat_bot.py --port 8093 --llm-url http://127.0.0.1:8091/v1 \\
        --llm-model SmolLM2-135M-Instruct --whisper-model DIR --piper-voice VOICE.onnx
"""

from __future__ import annotations

import os

# Models come from the paths given; never from a hub (set before faster-whisper is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import asyncio
import ipaddress
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aioice.ice
import numpy as np
import soxr
import uvicorn
from fastapi import FastAPI, HTTPException
from faster_whisper import WhisperModel
from loguru import logger
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner
from piper import PiperVoice

WARMUP_TEXT = "How many legs does a spider have?"


@dataclass(frozen=True)
class BotConfig:
    llm_url: str
    llm_model: str
    whisper_model: Path
    piper_voice: Path
    system_prompt: str
    max_tokens: int
    temperature: float
    seed: int | None
    frequency_penalty: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--llm-url", required=True, help="OpenAI-compatible base URL (…/v1)")
    parser.add_argument("--llm-model", required=True)
    parser.add_argument("--whisper-model", type=Path, required=True, help="CTranslate2 dir")
    parser.add_argument("--piper-voice", type=Path, required=True, help="Piper voice .onnx")
    parser.add_argument(
        "--system-prompt",
        default="You are a friendly voice assistant. Answer in one or two short sentences.",
    )
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=None, help="the LLM's sampling seed")
    parser.add_argument("--frequency-penalty", type=float, default=0.0)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def restrict_host_candidates(host: str) -> None:
    """Gather ICE host candidates on `host` only, when it is one specific IP address.

    aioice leaves loopback out of its host candidates and has no option for it; Parley's
    runtime narrows `aioice.ice.get_host_addresses` the same way."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if address.is_unspecified:
        return

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [host] if (use_ipv6 if address.version == 6 else use_ipv4) else []

    aioice.ice.get_host_addresses = host_addresses


async def warm_up(config: BotConfig) -> None:
    """Load and run each local model once, so that the first turn is not a cold start."""
    started = time.monotonic()
    voice = PiperVoice.load(config.piper_voice)
    speech = np.concatenate([c.audio_float_array for c in voice.synthesize(WARMUP_TEXT)])
    speech_16k = soxr.resample(speech, voice.config.sample_rate, 16000).astype(np.float32)
    whisper = WhisperModel(str(config.whisper_model), device="cpu", compute_type="int8")
    segments, _ = whisper.transcribe(speech_16k, language="en")
    heard = " ".join(s.text.strip() for s in segments)
    pcm = (np.clip(speech_16k, -1, 1) * 32767).astype(np.int16).tobytes()

    vad = SileroVADAnalyzer()
    vad.set_sample_rate(16000)
    await vad.analyze_audio(pcm)

    turn = LocalSmartTurnAnalyzerV3()
    turn.set_sample_rate(16000)
    turn.append_audio(pcm, is_speech=True)
    await turn.analyze_end_of_turn()
    await turn.cleanup()
    logger.info(f"models warm in {time.monotonic() - started:.1f} s (Whisper heard {heard!r})")


def build_worker(connection: SmallWebRTCConnection, config: BotConfig) -> PipelineWorker:
    """One conversation's pipeline, as in Pipecat's examples (its services load their models
    here, before the offer is answered)."""
    transport = SmallWebRTCTransport(
        webrtc_connection=connection,
        params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
    )
    stt = WhisperSTTService(
        device="cpu",
        compute_type="int8",
        settings=WhisperSTTService.Settings(model=str(config.whisper_model)),
    )
    llm = OpenAILLMService(
        api_key="none",
        base_url=config.llm_url,
        settings=OpenAILLMService.Settings(
            model=config.llm_model,
            system_instruction=config.system_prompt,
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            seed=config.seed,
            frequency_penalty=config.frequency_penalty,
        ),
    )
    tts = PiperTTSService(
        download_dir=config.piper_voice.parent,
        settings=PiperTTSService.Settings(voice=config.piper_voice.stem),
    )
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            user_aggregator,
            llm,
            tts,
            transport.output(),
            assistant_aggregator,
        ]
    )
    worker = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport: SmallWebRTCTransport, _client: object) -> None:
        await worker.cancel()

    return worker


def create_app(config: BotConfig) -> FastAPI:
    handler = SmallWebRTCRequestHandler()
    bots: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await warm_up(config)
        yield
        await handler.close()
        for bot in bots:
            bot.cancel()
        await asyncio.gather(*bots, return_exceptions=True)

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/offer")
    async def offer(request: SmallWebRTCRequest) -> dict[str, str] | None:
        started: list[asyncio.Task[None]] = []

        async def start(connection: SmallWebRTCConnection) -> None:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(build_worker(connection, config))
            bot = asyncio.create_task(runner.run())
            bots.add(bot)
            bot.add_done_callback(bots.discard)
            started.append(bot)

        answer = await handler.handle_web_request(request, start)
        # The handler logs and swallows a failing callback; an answer without a bot is an error.
        if request.pc_id is None and not started:
            raise HTTPException(500, "the bot's pipeline could not start; see the bot's log")
        return answer

    return app


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    config = BotConfig(
        llm_url=args.llm_url,
        llm_model=args.llm_model,
        whisper_model=args.whisper_model,
        piper_voice=args.piper_voice,
        system_prompt=args.system_prompt,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        frequency_penalty=args.frequency_penalty,
    )
    for path in (config.whisper_model / "model.bin", config.piper_voice):
        if not path.exists():
            sys.exit(f"pipecat_bot: model file not found: {path}")
    restrict_host_candidates(args.host)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
