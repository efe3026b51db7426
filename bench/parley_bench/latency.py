"""`parley bench latency`: V2V, TTFA and barge-in over WebRTC against a running runtime.

Definitions (DESIGN.md): V2V is from the last voiced sample of the question to the first
audible agent sample received here; TTFA is the server's end-of-turn decision to its first
agent audio frame (reported per turn in the `metrics` event); barge-in is from the first
voiced sample of the interruption to the last audible agent sample received here. The first
three turns of a session are warm-up and are reported apart from the steady state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from parley_bench.dialogue import ask, interrupt
from parley_bench.peer import Peer
from parley_bench.results import write_results
from parley_bench.stats import summarize

WARM_UP_TURNS = 3
QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky?",
    "Name a big animal.",
    "What is two plus two?",
    "Where do penguins live?",
    "What is the opposite of hot?",
    "How many days are in a week?",
    "What do bees make?",
    "What is the largest ocean?",
]
LONG_QUESTION = "Tell me a long story about a brave sailor and the sea."
INTERRUPTION = "Wait, stop, tell me something else."
TURN_FIELDS = (  # what each turn record keeps of the `metrics` event
    "ttfa_ms",
    "asr_ms",
    "llm_first_token_ms",
    "llm_first_sentence_ms",
    "tts_first_chunk_ms",
    "endpoint_ms",
    "early_endpoint",
    "speculative",
)


async def _turn(peer: Peer, number: int, question: str) -> dict[str, Any]:
    answer = await ask(peer, question, turn=number)
    return {
        "turn": number,
        "question": question,
        "v2v_ms": answer.v2v_ms,
        **{k: answer.metrics.get(k) for k in TURN_FIELDS},
    }


async def _bench(url: str, turns: int, barge_ins: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            ready = await http.get(f"{url}/readyz")
        except httpx.HTTPError as exc:
            raise SystemExit(f"no runtime at {url} ({exc!r}); start one with `make demo`") from exc
        if ready.status_code != 200:
            raise SystemExit(f"runtime at {url} is not ready: {ready.text}")
    peer = Peer(url)
    await peer.connect()
    await peer.wait_state("listening", 10)
    records = []
    bargings: list[float] = []
    skipped = 0
    try:
        for number in range(1, turns + 1):
            record = await _turn(peer, number, QUESTIONS[(number - 1) % len(QUESTIONS)])
            records.append(record)
            print(
                f"turn {number:3d}  V2V {record['v2v_ms']:7.1f} ms"
                f"  TTFA {record['ttfa_ms']:7.1f} ms"
                f"  ASR {record['asr_ms']} ms  LLM {record['llm_first_token_ms']}/"
                f"{record['llm_first_sentence_ms']} ms"
                f"  TTS {record['tts_first_chunk_ms']} ms  endpoint {record['endpoint_ms']} ms"
                f"{' (early)' if record['early_endpoint'] else ''}",
                flush=True,
            )
        for number in range(1, barge_ins + 1):
            latency = await interrupt(peer, LONG_QUESTION, INTERRUPTION)
            if latency is None:
                skipped += 1
                print(f"barge-in {number:3d}  agent had already finished: not counted", flush=True)
            else:
                bargings.append(latency)
                print(f"barge-in {number:3d}  {latency:7.1f} ms", flush=True)
    finally:
        await peer.close()

    def column(key: str, rows: list[dict[str, Any]]) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) is not None]

    steady, warm_up = records[WARM_UP_TURNS:], records[:WARM_UP_TURNS]
    stages = (
        "v2v_ms",
        "ttfa_ms",
        "asr_ms",
        "llm_first_token_ms",
        "llm_first_sentence_ms",
        "tts_first_chunk_ms",
    )
    report = {
        "url": url,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "turns": records,
        "steady": {k: summarize(column(k, steady)) for k in stages},
        "warm_up": {k: summarize(column(k, warm_up)) for k in stages},
        "all": {k: summarize(column(k, records)) for k in stages},
        "barge_in_ms": {**summarize(bargings), "samples": bargings, "not_counted": skipped},
        "speculative_share": (
            round(sum(1 for r in records if r["speculative"]) / len(records), 2)
            if records
            else None
        ),
        "early_endpoint_share": (
            round(sum(1 for r in records if r["early_endpoint"]) / len(records), 2)
            if records
            else None
        ),
    }
    return report


def print_report(report: dict[str, Any]) -> None:
    print()
    print(f"{'metric':<24}{'scope':<9}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}")
    for scope in ("steady", "warm_up", "all"):
        for key, row in report[scope].items():
            p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}"
            p95 = "-" if row["p95_ms"] is None else f"{row['p95_ms']:.1f}"
            print(f"{key:<24}{scope:<9}{row['n']:>4}{p50:>10}{p95:>10}")
    b = report["barge_in_ms"]
    p50 = "-" if b["p50_ms"] is None else f"{b['p50_ms']:.1f}"
    p95 = "-" if b["p95_ms"] is None else f"{b['p95_ms']:.1f}"
    print(f"{'barge_in_ms':<24}{'all':<9}{b['n']:>4}{p50:>10}{p95:>10}")
    print(f"speculative share of turns: {report['speculative_share']}")
    print(f"turns ended at the early endpoint: {report['early_endpoint_share']}")


def run_latency_bench(url: str, turns: int, barge_ins: int | None, out: str) -> int:
    print(
        f"latency bench: {turns} turns and {barge_ins if barge_ins is not None else turns} "
        f"barge-ins against {url}",
        flush=True,
    )
    report = asyncio.run(_bench(url.rstrip("/"), turns, turns if barge_ins is None else barge_ins))
    print_report(report)
    write_results(report, out)
    return 0
