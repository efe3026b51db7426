"""`parley` command line: `demo`, `runtime serve`, `tts serve`, `operator crd`, `bench latency`,
`bench tts`.

Subcommands import their heavy modules lazily, so `parley --help` stays instant and an image
without the media extras can still run the commands it has packages for.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from parley import __version__


def _runtime_overrides(args: argparse.Namespace) -> dict[str, object]:
    names = (
        "host",
        "port",
        "llm_url",
        "llm_model",
        "tts_url",
        "asr_model",
        "asr_device",
        "max_sessions",
        "system_prompt",
    )
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _add_runtime_flags(parser: argparse.ArgumentParser, port_default: int | None) -> None:
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port_default, help="listen port (8080)")
    parser.add_argument("--llm-url", help="OpenAI-compatible base URL, e.g. http://vllm:8000/v1")
    parser.add_argument("--llm-model", help="model name sent to the LLM server")
    parser.add_argument(
        "--tts-url", help="OpenAI-compatible speech server (default: in-process Piper)"
    )
    parser.add_argument("--asr-model", help="tiny.en (packaged) or a CTranslate2 model directory")
    parser.add_argument("--asr-device", choices=["cpu", "cuda"])
    parser.add_argument("--max-sessions", type=int, help="session cap (503 beyond it)")
    parser.add_argument("--system-prompt", help="the agent's system prompt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="local LLM server + runtime + web page, on CPU")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=None, help="web/runtime port (env PORT, 8080)")
    demo.add_argument("--llm-port", type=int, default=8081, help="local LLM server port")

    runtime = commands.add_parser("runtime", help="the voice runtime")
    runtime_commands = runtime.add_subparsers(dest="runtime_command", required=True)
    serve = runtime_commands.add_parser("serve", help="serve the runtime HTTP API")
    _add_runtime_flags(serve, None)

    tts = commands.add_parser("tts", help="the speech (TTS) server")
    tts_commands = tts.add_subparsers(dest="tts_command", required=True)
    tts_serve = tts_commands.add_parser("serve", help="serve OpenAI-compatible /v1/audio/speech")
    tts_serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    tts_serve.add_argument("--port", type=int, help="listen port (8000)")
    tts_serve.add_argument("--default-model", choices=["piper", "xtts"])
    tts_serve.add_argument("--default-voice", help="voice used when a request names none")
    tts_serve.add_argument("--xtts-model-dir", help="local XTTS-v2 checkpoint directory")
    tts_serve.add_argument(
        "--vram-cap-gib", type=float, help="GPU memory cap (PARLEY_VRAM_CAP_GIB)"
    )
    tts_serve.add_argument("--max-streams", type=int, help="syntheses at once")

    operator = commands.add_parser("operator", help="the Kubernetes operator")
    operator_commands = operator.add_subparsers(dest="operator_command", required=True)
    operator_commands.add_parser("crd", help="print the VoiceDeployment CRD (YAML)")
    operator_commands.add_parser("rbac", help="print the operator's ClusterRole (YAML)")
    run = operator_commands.add_parser("run", help="run the operator (kopf)")
    run.add_argument("--namespace", "-n", action="append", help="watch these (default: all)")
    run.add_argument("--peering", help="kopf peering name (default: standalone)")

    bench = commands.add_parser("bench", help="benchmarks")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    latency = bench_commands.add_parser("latency", help="V2V, TTFA and barge-in over WebRTC")
    latency.add_argument("--url", default="http://127.0.0.1:8080", help="a running runtime")
    latency.add_argument("--turns", type=int, default=10)
    latency.add_argument("--barge-ins", type=int, default=None, help="default: same as --turns")
    latency.add_argument("--out", default="bench/results/latency.json", help="JSON output file")
    tts_bench = bench_commands.add_parser("tts", help="TTS server TTFB and real-time factor")
    tts_bench.add_argument("--url", default=None, help="a running TTS server (default: start one)")
    tts_bench.add_argument("--streams", default="1,4,8", help="concurrency levels")
    tts_bench.add_argument("--requests", type=int, default=16, help="requests per level")
    tts_bench.add_argument("--out", default="bench/results/tts.json", help="JSON output file")
    op_bench = bench_commands.add_parser(
        "operator", help="VoiceDeployment apply → children, convergence"
    )
    op_bench.add_argument("--sequential", type=int, default=50, help="timed one by one")
    op_bench.add_argument("--total", type=int, default=500, help="VoiceDeployments in all")
    op_bench.add_argument("--out", default="bench/results/operator.json", help="JSON output file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aioice", "aiortc", "faster_whisper", "httpx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.command == "demo":
        from parley.demo import run_demo

        return run_demo(host=args.host, port=args.port, llm_port=args.llm_port)
    if args.command == "runtime":
        from parley.serve import serve_runtime

        return serve_runtime(_runtime_overrides(args))
    if args.command == "operator":
        from parley.operate import operator_command

        return operator_command(args)
    if args.command == "tts":
        from parley.serve import serve_tts

        names = (
            "host",
            "port",
            "default_model",
            "default_voice",
            "xtts_model_dir",
            "vram_cap_gib",
            "max_streams",
        )
        return serve_tts({n: getattr(args, n) for n in names if getattr(args, n) is not None})
    if args.command == "bench" and args.bench_command == "operator":
        from parley_bench.operator_load import run_operator_bench

        return run_operator_bench(args.sequential, args.total, args.out)
    if args.command == "bench" and args.bench_command == "tts":
        from parley_bench.tts import run_tts_bench

        levels = [int(level) for level in args.streams.split(",")]
        return run_tts_bench(args.url, levels, args.requests, args.out)
    if args.command == "bench":
        from parley_bench.latency import run_latency_bench

        return run_latency_bench(args.url, args.turns, args.barge_ins, args.out)
    return 2
