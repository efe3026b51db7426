"""`parley bench tts`: TTFB, real-time factor and throughput of the TTS server under load.

Without `--url` a server is started in this process (uvicorn in a background thread on a free
127.0.0.1 port, `max_streams` = the highest level) and stopped at the end.

Definitions, per request (`POST /v1/audio/speech`, `response_format: pcm`, streamed):

- **TTFB**: request sent → first body bytes received (the response headers come earlier).
- **Total**: request sent → last body byte received.
- **Audio duration**: body bytes / 2 / `X-Sample-Rate` (16-bit mono PCM).
- **RTF** (real-time factor): total / audio duration; below 1 is faster than real time.
- **Throughput**, per level: audio seconds received / wall seconds of the whole level.

Each level N runs `requests` requests (at least N) from N closed-loop workers, so N requests
are in flight at all times, cycling through multi-sentence texts. Then the first sentence over
HTTP (one request at a time) is compared with in-process Piper (`PiperTTS().synthesize()`,
time to its first chunk) on the same sentences, one at a time, first all over HTTP and then all
in process (two ONNX sessions taking turns on the same cores slow each other down). The
difference is the cost of the HTTP hop (request handling, resampling to 24 kHz, the loopback
round trip); it is reported as the difference of the percentiles and as the median of the
differences per repetition (same sentence).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np

from parley_bench.results import write_results

TEXTS = [
    "Hello there. Thanks for calling the support line. I can help you reset your password, "
    "check an order, or book a visit from a technician. What would you like to do today?",
    "Sure. Your order left our warehouse on Monday morning and is now with the courier, who "
    "expects to deliver it on Thursday between nine and noon. You will get a text message an "
    "hour before they arrive. Anything else?",
    "Okay. Done. The appointment is booked for next Tuesday at three in the afternoon, and a "
    "confirmation is on its way to your email address. Goodbye!",
]
# Single sentences without clause punctuation, so the server's sentence chunker sends each
# to the backend whole, exactly as the in-process comparison does.
SENTENCES = [
    "Hello there.",
    "Thanks for calling the support line today.",
    "Your order left our warehouse on Monday morning and is now on its way to you.",
    "The appointment is booked for next Tuesday at three in the afternoon.",
]
COMPARE_REPETITIONS = 20
TIMEOUT = httpx.Timeout(300.0, connect=5.0)


def _stats(values: list[float], digits: int = 1) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "mean": None}
    return {
        "n": len(values),
        "p50": round(float(np.percentile(values, 50)), digits),
        "p95": round(float(np.percentile(values, 95)), digits),
        "mean": round(float(np.mean(values)), digits),
    }


async def _speak(http: httpx.AsyncClient, url: str, text: str) -> dict[str, Any]:
    """One streamed request; TTFB and total in ms, audio in seconds."""
    body = {"input": text, "response_format": "pcm"}
    sent = time.perf_counter()
    first: float | None = None
    size = 0
    async with http.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")[:200]
            return {"chars": len(text), "status": response.status_code, "error": detail}
        rate = int(response.headers["x-sample-rate"])
        async for data in response.aiter_raw():
            if data and first is None:
                first = time.perf_counter()
            size += len(data)
    done = time.perf_counter()
    audio_s = size / 2 / rate
    total_ms = (done - sent) * 1000
    return {
        "chars": len(text),
        "status": 200,
        "ttfb_ms": round(((first or done) - sent) * 1000, 1),
        "total_ms": round(total_ms, 1),
        "audio_s": round(audio_s, 3),
        "rtf": round(total_ms / 1000 / audio_s, 4) if audio_s else None,
    }


async def _level(http: httpx.AsyncClient, url: str, streams: int, requests: int) -> dict[str, Any]:
    """`requests` requests from `streams` closed-loop workers."""
    jobs = iter(range(max(requests, streams)))
    samples: list[dict[str, Any]] = []

    async def worker() -> None:
        for index in jobs:
            sample = await _speak(http, url, TEXTS[index % len(TEXTS)])
            samples.append({"index": index, **sample})

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(streams)))
    wall_s = time.perf_counter() - started
    ok = [s for s in samples if s["status"] == 200]
    audio_s = sum(s["audio_s"] for s in ok)
    return {
        "streams": streams,
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "wall_s": round(wall_s, 3),
        "audio_s": round(audio_s, 3),
        "throughput": round(audio_s / wall_s, 3),
        "ttfb_ms": _stats([s["ttfb_ms"] for s in ok]),
        "rtf": _stats([s["rtf"] for s in ok if s["rtf"] is not None], 3),
        "samples": sorted(samples, key=lambda s: s["index"]),
    }


async def _first_sentence(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """First-sentence TTFB over HTTP, then in-process Piper's first chunk, same sentences."""
    from parley_tts import PiperTTS

    texts = list(itertools.islice(itertools.cycle(SENTENCES), COMPARE_REPETITIONS))
    http_ms: list[float] = []
    for text in [SENTENCES[0], *texts]:  # the first is a warm-up, not counted
        sample = await _speak(http, url, text)
        if sample["status"] != 200:
            raise SystemExit(f"TTS server answered {sample['status']}: {sample['error']}")
        http_ms.append(sample["ttfb_ms"])

    piper = await asyncio.to_thread(PiperTTS)  # loaded only now: one ONNX session busy at a time
    piper_ms: list[float] = []
    try:
        for text in [SENTENCES[0], *texts]:
            started = time.perf_counter()
            first: float | None = None
            async for _ in piper.synthesize(text):
                first = first or time.perf_counter()
            piper_ms.append(round(((first or time.perf_counter()) - started) * 1000, 1))
    finally:
        piper.close()
    http_ms, piper_ms = http_ms[1:], piper_ms[1:]
    over_http, local = _stats(http_ms), _stats(piper_ms)
    return {
        "http_ttfb_ms": over_http,
        "in_process_first_chunk_ms": local,
        "hop_ms": {
            **{q: round(over_http[q] - local[q], 1) for q in ("p50", "p95", "mean")},
            "paired_p50": _stats([h - p for h, p in zip(http_ms, piper_ms, strict=True)])["p50"],
        },
        "samples": [
            {"text": t, "http_ms": h, "in_process_ms": p}
            for t, h, p in zip(texts, http_ms, piper_ms, strict=True)
        ],
    }


async def _bench(url: str, levels: list[int], requests: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        try:
            ready = await http.get(f"{url}/readyz")
        except httpx.HTTPError as exc:
            raise SystemExit(
                f"no TTS server at {url} ({exc!r}); start one with `parley tts serve`, "
                "or omit --url to let the bench start its own"
            ) from exc
        if ready.status_code != 200:
            raise SystemExit(f"TTS server at {url} is not ready: {ready.text}")
        rows = []
        for streams in levels:
            row = await _level(http, url, streams, requests)
            rows.append(row)
            _print_level(row)
        comparison = await _first_sentence(http, url)
    return {"levels": rows, "first_sentence": comparison}


@contextmanager
def _local_server(max_streams: int) -> Iterator[str]:
    """A TTS server in a background thread on a free loopback port; yields its URL."""
    import uvicorn

    from parley_tts.config import TTSSettings
    from parley_tts.server import create_tts_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = TTSSettings(
        host="127.0.0.1", port=port, max_streams=max_streams, max_queue=max_streams
    )
    server = uvicorn.Server(
        uvicorn.Config(create_tts_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="tts-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if not thread.is_alive():
                raise SystemExit("the in-process TTS server failed to start (see the log above)")
            if time.monotonic() > deadline:
                raise SystemExit("the in-process TTS server was not ready within 120 s")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def _given(url: str) -> Iterator[str]:
    """A server someone else runs; `.../v1` is accepted too."""
    yield url.rstrip("/").removesuffix("/v1")


def _print_level(row: dict[str, Any]) -> None:
    t, r = row["ttfb_ms"], row["rtf"]
    print(
        f"streams {row['streams']:2d}  n {t['n']:3d}  errors {row['errors']}"
        f"  TTFB p50 {t['p50']} / p95 {t['p95']} ms  RTF p50 {r['p50']} / p95 {r['p95']}"
        f"  throughput {row['throughput']} audio s/s",
        flush=True,
    )


def _cell(value: float | None, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


def print_report(report: dict[str, Any]) -> None:
    print()
    print(
        f"{'streams':>7}{'n':>5}{'err':>5}{'TTFB p50':>10}{'p95 ms':>8}{'RTF p50':>9}{'p95':>7}"
        f"{'audio s/s':>11}"
    )
    for row in report["levels"]:
        t, r = row["ttfb_ms"], row["rtf"]
        print(
            f"{row['streams']:>7}{t['n']:>5}{row['errors']:>5}{_cell(t['p50'], 10)}"
            f"{_cell(t['p95'], 8)}{_cell(r['p50'], 9)}{_cell(r['p95'], 7)}"
            f"{row['throughput']:>11}"
        )
    c = report["first_sentence"]
    print(f"\nfirst sentence, one request at a time ({c['http_ttfb_ms']['n']} repetitions):")
    for label, row in (
        ("HTTP TTFB", c["http_ttfb_ms"]),
        ("in-process Piper first chunk", c["in_process_first_chunk_ms"]),
        ("HTTP hop (difference)", c["hop_ms"]),
    ):
        print(f"  {label:<30} p50 {row['p50']:>7} ms   p95 {row['p95']:>7} ms")
    print(f"  {'HTTP hop, paired median':<30} p50 {c['hop_ms']['paired_p50']:>7} ms")


def run_tts_bench(url: str | None, levels: list[int], requests: int, out: str) -> int:
    if not levels or min(levels) < 1:
        raise SystemExit("concurrency levels must be positive integers, e.g. --streams 1,4,8")
    where = url or "a TTS server started in this process"
    print(f"tts bench: levels {levels}, {requests} requests each, against {where}", flush=True)
    with _local_server(max(levels)) if url is None else _given(url) as base:
        report = {
            "url": base,
            "server": "in-process" if url is None else "external",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpu_count": os.cpu_count(),
            "texts": TEXTS,
            **asyncio.run(_bench(base, levels, requests)),
        }
    print_report(report)
    write_results(report, out)
    return 0
