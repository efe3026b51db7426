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
        "drain_timeout_s",
        "turn_deadline_ms",
        "ttfa_slo_ms",
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
    parser.add_argument(
        "--drain-timeout-s", type=float, help="SIGTERM: grace for live sessions (600)"
    )
    parser.add_argument(
        "--turn-deadline-ms", type=int, help="reset a turn with no first audio by then"
    )
    parser.add_argument("--ttfa-slo-ms", type=float, help="TTFA p95 objective for backpressure")


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
    drain = runtime_commands.add_parser(
        "drain", help="stop a runtime admitting sessions (its preStop hook)"
    )
    drain.add_argument("--url", default="http://127.0.0.1:8080", help="the runtime")
    drain.add_argument("--wait", action="store_true", help="until its last session has ended")
    drain.add_argument("--timeout-s", type=float, default=600, help="give up waiting after")

    scos = commands.add_parser("scos", help="the SCOS summary schema (parley.scos/v1)")
    scos_commands = scos.add_subparsers(dest="scos_command", required=True)
    scos_commands.add_parser("schema", help="print its JSON Schema")

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
    crd = operator_commands.add_parser("crd", help="print the VoiceDeployment CRD (YAML)")
    crd.add_argument(
        "--apply",
        action="store_true",
        help="server-side apply it to the cluster instead (field manager parley, conflicts "
        "forced; $KUBECONFIG, or the pod's service account)",
    )
    rbac = operator_commands.add_parser(
        "rbac", help="print the operator's roles and the ClusterRole of `crd --apply` (YAML)"
    )
    rbac.add_argument(
        "--namespace",
        "-n",
        action="append",
        help="namespaced mode: a Role in each of these, and a ClusterRole of the cluster-scoped "
        "reads only (default: cluster mode, one ClusterRole)",
    )
    run = operator_commands.add_parser("run", help="run the operator (kopf)")
    run.add_argument("--namespace", "-n", action="append", help="watch these (default: all)")
    run.add_argument("--peering", help="kopf peering name (default: standalone)")
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz (default: none)",
    )

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
    _add_capacity_bench(bench_commands)
    _add_scaling_bench(bench_commands)
    _add_compare_bench(bench_commands)
    _add_soak(commands)
    return parser


def _add_soak(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from parley_bench.durations import parse_duration

    soak = commands.add_parser(
        "soak", help="load/soak: concurrent WebRTC sessions against a runtime, with a verdict"
    )
    soak.add_argument("--target", required=True, help="the runtime, e.g. http://voice:8080")
    soak.add_argument("--sessions", type=int, default=4, help="concurrent sessions")
    soak.add_argument("--duration", type=parse_duration, default="10m", help="90s, 10m, 2h")
    soak.add_argument(
        "--duty-cycle", type=float, default=0.3, help="share of each session's time spent talking"
    )
    soak.add_argument(
        "--barge-in-share", type=float, default=0.2, help="share of turns that interrupt"
    )
    soak.add_argument("--seed", type=int, default=0, help="picks the questions and timings")
    soak.add_argument("--cycle", type=parse_duration, default="60s", help="active + idle period")
    soak.add_argument(
        "--call-length",
        type=parse_duration,
        default=None,
        help="each session hangs up after about this long (±25 %%) and dials again; "
        "default: one call for the whole run",
    )
    soak.add_argument(
        "--ramp", type=parse_duration, default=None, help="stagger starts (min(cycle, 1/5 run))"
    )
    soak.add_argument("--max-ttfa-p95-ms", type=float, default=250.0, help="criterion")
    soak.add_argument("--max-barge-in-p95-ms", type=float, default=150.0, help="criterion")
    soak.add_argument("--max-error-rate", type=float, default=0.01, help="criterion")
    soak.add_argument("--scrape-interval", type=parse_duration, default="5s", help="/v1/scos")
    soak.add_argument("--progress-interval", type=parse_duration, default="5s", help="stderr")
    soak.add_argument(
        "--result-file", help="also write the JSON summary here, e.g. /dev/termination-log"
    )
    soak.add_argument(
        "--token-file",
        help="a file holding the bearer token to create sessions with (an API or admin token)",
    )


def _add_capacity_bench(
    bench_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    from parley_bench.durations import parse_duration

    capacity = bench_commands.add_parser(
        "capacity", help="media and conversational capacity of one runtime process"
    )
    capacity.add_argument("--steps", default="10,25,50,75,100", help="media sessions per step")
    capacity.add_argument("--hold", type=parse_duration, default="25s", help="per media step")
    capacity.add_argument(
        "--conversation-steps", default="1,2,4,8", help="sessions at the duty cycle ('' skips)"
    )
    capacity.add_argument(
        "--conversation-duration", type=parse_duration, default="2m", help="per step"
    )
    capacity.add_argument("--duty-cycle", type=float, default=0.3)
    capacity.add_argument(
        "--ttfa-slo-ms", type=float, default=None, help="default: the runtime's for CPU"
    )
    capacity.add_argument(
        "--keep-going", action="store_true", help="measure every step, even after a failed one"
    )
    capacity.add_argument("--out", default="bench/results/capacity.json", help="JSON output file")


def _add_scaling_bench(
    bench_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    from parley_bench.durations import parse_duration

    scaling = bench_commands.add_parser(
        "scaling",
        help="the autoscaler on the cluster in $KUBECONFIG: overload → scale-up time, "
        "sessions cut over scale-down cycles, operator CPU/RSS scraping many pods",
    )
    scaling.add_argument("--cycles", type=int, default=20, help="scale-up/down cycles (0: skip)")
    scaling.add_argument("--sessions", type=int, default=2, help="calls throughout the cycles")
    scaling.add_argument("--duty-cycle", type=float, default=0.3, help="of each call")
    scaling.add_argument("--call-length", type=parse_duration, default="30s", help="±25 %%")
    scaling.add_argument(
        "--scale-down-window",
        type=parse_duration,
        default="20s",
        help="scaleDownStabilizationSeconds for the cycles",
    )
    scaling.add_argument("--pods", type=int, default=100, help="pods scraped in part 2 (0: skip)")
    scaling.add_argument("--scrape-hold", type=parse_duration, default="60s", help="measured for")
    scaling.add_argument("--out", default="bench/results/scaling.json", help="JSON output file")


def _add_compare_bench(
    bench_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    compare = bench_commands.add_parser(
        "compare",
        help="Parley vs Pipecat: V2V and barge-in, same models, same scripted conversation",
    )
    compare.add_argument(
        "--stacks", default="parley,pipecat", help="which to run, in this order (parley,pipecat)"
    )
    compare.add_argument("--turns", type=int, default=16, help="turns per session, barge-ins too")
    compare.add_argument("--barge-ins", type=int, default=6, help="of the turns, interrupted ones")
    compare.add_argument("--seed", type=int, default=0, help="picks the lines and their order")
    compare.add_argument("--sessions", type=int, default=1, help="concurrent conversations")
    compare.add_argument(
        "--duty-cycle", type=float, default=1.0, help="share of each session's time spent talking"
    )
    compare.add_argument(
        "--speakers",
        default="varied",
        help="varied: 8 espeak-ng speakers at 140-190 wpm; slow: 6 at 100-125 wpm who hesitate "
        "mid-question",
    )
    compare.add_argument(
        "--parley-url", help="a running Parley runtime to measure (default: start one)"
    )
    compare.add_argument(
        "--llm-url",
        help="a running OpenAI-compatible server with SmolLM2-135M-Instruct (default: start "
        "the embedded one)",
    )
    compare.add_argument(
        "--json", default="bench/results/compare.json", help="every turn and the summary"
    )


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


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
    if args.command == "runtime" and args.runtime_command == "drain":
        from parley.drain import drain_runtime

        return drain_runtime(args.url, args.wait, args.timeout_s)
    if args.command == "scos":
        import json

        from parley.scos import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
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
    if args.command == "soak":
        from parley_bench.soak import Criteria, SoakConfig, run_soak

        config = SoakConfig(
            target=args.target,
            sessions=args.sessions,
            duration_s=args.duration,
            duty_cycle=args.duty_cycle,
            barge_in_share=args.barge_in_share,
            seed=args.seed,
            cycle_s=args.cycle,
            call_s=args.call_length,
            ramp_s=args.ramp,
            scrape_interval_s=args.scrape_interval,
            progress_interval_s=args.progress_interval,
            criteria=Criteria(args.max_ttfa_p95_ms, args.max_barge_in_p95_ms, args.max_error_rate),
            token_file=args.token_file,
        )
        return run_soak(config, args.result_file)
    if args.command == "bench" and args.bench_command == "capacity":
        from parley_bench.capacity import CapacityOptions, run_capacity_bench

        return run_capacity_bench(
            CapacityOptions(
                media_steps=_counts(args.steps),
                hold_s=args.hold,
                conversation_steps=_counts(args.conversation_steps),
                conversation_s=args.conversation_duration,
                duty_cycle=args.duty_cycle,
                ttfa_slo_ms=args.ttfa_slo_ms,
                keep_going=args.keep_going,
                out=args.out,
            )
        )
    if args.command == "bench" and args.bench_command == "scaling":
        from parley_bench.scaling import ScalingBenchOptions, run_scaling_bench

        return run_scaling_bench(
            ScalingBenchOptions(
                cycles=args.cycles,
                sessions=args.sessions,
                duty_cycle=args.duty_cycle,
                call_s=args.call_length,
                scale_down_window_s=int(args.scale_down_window),
                pods=args.pods,
                scrape_hold_s=args.scrape_hold,
                out=args.out,
            )
        )
    if args.command == "bench" and args.bench_command == "compare":
        from parley_bench.compare.run import CompareOptions, run_compare

        return run_compare(
            CompareOptions(
                stacks=tuple(s.strip() for s in args.stacks.split(",") if s.strip()),
                turns=args.turns,
                barge_ins=args.barge_ins,
                seed=args.seed,
                sessions=args.sessions,
                duty_cycle=args.duty_cycle,
                speakers=args.speakers,
                parley_url=args.parley_url,
                llm_url=args.llm_url,
                out=args.json,
            )
        )
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
