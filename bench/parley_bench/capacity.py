"""`parley bench capacity`: how many sessions one runtime process holds on this machine.

It starts `parley runtime serve` as a separate process (client and server apart, as in a
deployment), with a session cap far above what is tested, and measures two things:

1. **Media capacity.** Steps of N concurrent sessions with audio both ways and nobody
   talking: every client microphone sends a low noise floor (so VAD runs on real-looking
   input), the agent's track sends its paced frames. After the step's sessions are connected
   and settled it holds for `hold_s`, with the runtime's SCOS window set to the hold, and reads
   from `/v1/scos` the share of outbound frames sent late and the event-loop lag p95, and
   from `/proc` the runtime's RSS and CPU. A step passes when late frames stay under 1 % and
   lag p95 under 20 ms; the first step that fails ends this part.
2. **Conversational capacity.** With the embedded LLM server (as `parley demo` runs it), `parley
   soak` runs at a 30 % duty cycle for a few session counts against a fresh runtime; a step
   passes when TTFA p95 is within the SLO (the runtime's CPU default) and no more than 1 % of
   turns fail. The largest passing step is what `sessionsPerPod` should default to here.

The client peers run in this process and share the machine's cores with the runtime; each
row says how busy the client was (its CPU and its own event-loop lag), so a step limited by
the load generator rather than the runtime can be told apart.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from parley.local_llm import LLM_MODEL_NAME, LOG_DIR, LLMServer
from parley_bench.child_server import ChildServer, free_port
from parley_bench.loop_lag import LoopLagProbe
from parley_bench.peer import AgentRecorder, Peer, ScriptedMicrophone
from parley_bench.proc import cpu_seconds, machine_cpu_seconds, rss_mib
from parley_bench.results import write_results
from parley_bench.scos_watch import fetch_scos
from parley_bench.soak import Criteria, Soak, SoakConfig
from parley_runtime.webrtc import use_host_addresses

#: The microphone's noise floor (int16 RMS, about -60 dBFS): audio, not speech.
NOISE_RMS = 30.0
#: Sessions connecting at once while a step ramps up.
CONNECT_CONCURRENCY = 8
#: After the last connection of a step, before the hold starts (handshakes finish).
SETTLE_S = 5.0
SESSION_CAP = 1000


@dataclass(frozen=True)
class CapacityOptions:
    media_steps: tuple[int, ...] = (10, 25, 50, 75, 100)
    hold_s: float = 25.0
    conversation_steps: tuple[int, ...] = (1, 2, 4, 8)
    conversation_s: float = 120.0
    duty_cycle: float = 0.3
    max_late_frame_ratio: float = 0.01
    max_loop_lag_p95_ms: float = 20.0
    ttfa_slo_ms: float | None = None  # None: the runtime's default for CPU serving
    max_error_rate: float = 0.01
    keep_going: bool = False  # measure every step, even after one failed (for the curve)
    out: str = "bench/results/capacity.json"


# -- the runtime under test ------------------------------------------------------------------


class RuntimeProcess(ChildServer):
    """`parley runtime serve` on a free loopback port, in its own process group, with
    `PARLEY_*` settings from `env`."""

    def __init__(self, llm_url: str, env: dict[str, str], log_name: str) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "parley",
            "runtime",
            "serve",
            "--port",
            str(self.port),
            "--max-sessions",
            str(SESSION_CAP),
            "--llm-url",
            llm_url,
            "--llm-model",
            LLM_MODEL_NAME,
        ]
        super().__init__(
            "the runtime",
            command,
            f"http://127.0.0.1:{self.port}",
            "/readyz",
            LOG_DIR / log_name,
            env={**os.environ, "PARLEY_ICE_HOST_ADDRESSES": '["127.0.0.1"]', **env},
        )


class CpuMeter:
    """CPU use over an interval, in % of one core: the runtime, this process (the client
    peers), and everything else on the machine (other work sharing the cores)."""

    def __init__(self, runtime_pid: int) -> None:
        self._pid = runtime_pid
        self._start = (cpu_seconds(runtime_pid), time.process_time(), *machine_cpu_seconds())

    def read(self) -> dict[str, float]:
        server0, client0, busy0, total0 = self._start
        busy1, total1 = machine_cpu_seconds()
        cores = os.cpu_count() or 1
        wall = max(1e-6, (total1 - total0) / cores)
        server = (cpu_seconds(self._pid) - server0) / wall * 100
        client = (time.process_time() - client0) / wall * 100
        machine = (busy1 - busy0) / wall * 100
        return {
            "server_cpu_pct": round(server, 1),
            "client_cpu_pct": round(client, 1),
            "other_cpu_pct": round(max(0.0, machine - server - client), 1),
        }


# -- media capacity --------------------------------------------------------------------------


def _media_peer(url: str, index: int) -> Peer:
    return Peer(
        url,
        mic=ScriptedMicrophone(noise_rms=NOISE_RMS, seed=index),
        agent=AgentRecorder(keep_s=5.0, keep_audio=False),
        event_types=frozenset({"state", "error"}),
    )


async def _connect_more(url: str, peers: list[Peer], target: int) -> int:
    """Connect sessions until `target` are open; return how many attempts failed."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    failures = 0

    async def one(index: int) -> None:
        nonlocal failures
        async with gate:
            peer = _media_peer(url, index)
            try:
                await peer.connect(timeout=30)
                await peer.wait_state("listening", 30)
            except Exception as exc:
                failures += 1
                print(f"  session {index}: could not connect: {type(exc).__name__}: {exc}")
                await peer.close()
            else:
                peers.append(peer)

    await asyncio.gather(*(one(i) for i in range(len(peers), target)))
    return failures


async def _media_steps(runtime: RuntimeProcess, options: CapacityOptions) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    peers: list[Peer] = []
    baseline_rss = rss_mib(runtime.pid)
    lag = LoopLagProbe()
    print(f"runtime RSS with no session: {baseline_rss:.1f} MiB", flush=True)
    print(_MEDIA_HEADER, flush=True)
    try:
        async with httpx.AsyncClient(timeout=10) as http, lag.running():
            for sessions in options.media_steps:
                failures = await _connect_more(runtime.url, peers, sessions)
                await asyncio.sleep(SETTLE_S)
                lag.reset()
                cpu = CpuMeter(runtime.pid)
                await asyncio.sleep(options.hold_s)
                scos = await fetch_scos(http, runtime.url)
                cpu_use = cpu.read()
                rss = rss_mib(runtime.pid)
                row: dict[str, Any] = {
                    "sessions": sessions,
                    "connected": scos.sessions.active,
                    "connect_failures": failures,
                    "late_frame_ratio": scos.media.late_frame_ratio,
                    "frames_sent": scos.media.frames_sent,
                    "loop_lag_p95_ms": scos.media.event_loop_lag_p95_ms,
                    "backpressure": scos.backpressure.name,
                    **cpu_use,
                    "client_loop_lag_p95_ms": lag.p95_ms(),
                    "rss_mib": round(rss, 1),
                    "rss_per_session_mib": round((rss - baseline_rss) / max(1, len(peers)), 2),
                }
                row["passed"] = (
                    failures == 0
                    and scos.sessions.active >= sessions
                    and scos.media.late_frame_ratio < options.max_late_frame_ratio
                    and scos.media.event_loop_lag_p95_ms < options.max_loop_lag_p95_ms
                )
                rows.append(row)
                print(_media_row(row), flush=True)
                if not row["passed"] and not options.keep_going:
                    break
    finally:
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)
    return rows


_MEDIA_HEADER = (
    f"{'sessions':>8} {'late %':>7} {'lag p95':>8} {'frames':>7} {'server CPU':>10}"
    f" {'client CPU':>10} {'other CPU':>9} {'client lag':>10} {'RSS MiB':>8} {'MiB/sess':>8}"
    "  result"
)


def _media_row(row: dict[str, Any]) -> str:
    client_lag = row["client_loop_lag_p95_ms"]
    return (
        f"{row['sessions']:>8} {row['late_frame_ratio'] * 100:>7.2f}"
        f" {row['loop_lag_p95_ms']:>8.1f} {row['frames_sent']:>7}"
        f" {row['server_cpu_pct']:>9.0f}% {row['client_cpu_pct']:>9.0f}%"
        f" {row['other_cpu_pct']:>8.0f}%"
        f" {'-' if client_lag is None else f'{client_lag:.1f}':>10}"
        f" {row['rss_mib']:>8.1f} {row['rss_per_session_mib']:>8.2f}"
        f"  {'ok' if row['passed'] else 'FAIL'}"
        + ("" if row["connected"] >= row["sessions"] else f" ({row['connected']} connected)")
    )


# -- conversational capacity -----------------------------------------------------------------


async def _conversation_step(
    runtime: RuntimeProcess, sessions: int, options: CapacityOptions, slo_ms: float
) -> dict[str, Any]:
    config = SoakConfig(
        target=runtime.url,
        sessions=sessions,
        duration_s=options.conversation_s,
        duty_cycle=options.duty_cycle,
        cycle_s=30.0,
        ramp_s=min(15.0, options.conversation_s / 5),
        criteria=Criteria(
            max_ttfa_p95_ms=slo_ms, max_barge_in_p95_ms=None, max_error_rate=options.max_error_rate
        ),
    )
    cpu = CpuMeter(runtime.pid)
    summary = await Soak(config).run()
    cpu_use = cpu.read()
    latency = summary["latency"]
    scope = "steady" if latency["steady"]["ttfa"]["n"] else "all"
    return {
        "sessions": sessions,
        "turns": summary["turns"]["attempted"],
        "turn_outcomes": summary["turns"],
        "failed_turns": sum(summary["turns"][o] for o in ("no_answer", "error", "cut")),
        "rejected": summary["connections"]["rejected"],
        "errors": summary["errors"],
        "error_rate": summary["error_rate"],
        "ttfa_scope": scope,
        "ttfa": latency[scope]["ttfa"],
        "v2v": latency[scope]["v2v"],
        "barge_in": latency["all"]["barge_in"],
        "stages_p50_p95_ms": summary["stages_p50_p95_ms"],
        "max_backpressure": summary["scos"]["max_level_name"],
        **cpu_use,
        "client_loop_lag_p95_ms": summary["client_loop_lag_p95_ms"],
        "rss_mib": round(rss_mib(runtime.pid), 1),
        "passed": summary["passed"],
        "harness_error": summary["harness_error"],
    }


_CONVERSATION_HEADER = (
    f"{'sessions':>8} {'turns':>6} {'failed':>6} {'503s':>5} {'TTFA p50':>9} {'TTFA p95':>9}"
    f" {'V2V p95':>8} {'barge-in p95':>12} {'max level':>17} {'server CPU':>10}"
    f" {'other CPU':>9}  result"
)


def _conversation_row(row: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    return (
        f"{row['sessions']:>8} {row['turns']:>6} {row['failed_turns']:>6} {row['rejected']:>5}"
        f" {ms(row['ttfa']['p50_ms']):>9} {ms(row['ttfa']['p95_ms']):>9}"
        f" {ms(row['v2v']['p95_ms']):>8} {ms(row['barge_in']['p95_ms']):>12}"
        f" {row['max_backpressure'] or '-':>17} {row['server_cpu_pct']:>9.0f}%"
        f" {row['other_cpu_pct']:>8.0f}%  {'ok' if row['passed'] else 'FAIL'}"
    )


# -- the bench -------------------------------------------------------------------------------


def run_capacity_bench(options: CapacityOptions) -> int:
    from parley_runtime.config import RuntimeSettings

    slo_ms = options.ttfa_slo_ms or RuntimeSettings(asr_device="cpu").ttfa_slo_ms
    use_host_addresses(["127.0.0.1"])
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "options": asdict(options),
        "ttfa_slo_ms": slo_ms,
    }
    llm = LLMServer(free_port())
    try:
        if options.conversation_steps:
            llm.start()
        report["media"] = _run_media(llm.url, options)
        report["conversation"] = _run_conversation(llm.url, options, slo_ms)
    finally:
        llm.stop()
    report["media_capacity"] = _capacity(report["media"])
    report["conversational_capacity"] = _capacity(report["conversation"])
    if options.media_steps:
        print(
            f"\nmedia capacity: {report['media_capacity']} sessions"
            f" (late frames < {options.max_late_frame_ratio:.0%},"
            f" loop lag p95 < {options.max_loop_lag_p95_ms:.0f} ms)"
        )
    if options.conversation_steps:
        print(
            f"conversational capacity at {options.duty_cycle:.0%} duty cycle:"
            f" {report['conversational_capacity']} sessions (TTFA p95 <= {slo_ms:.0f} ms)"
        )
    write_results(report, options.out)
    return 0


def _capacity(rows: list[dict[str, Any]]) -> int:
    """The largest step before the first failed one (a later pass after a failure is noise,
    not capacity)."""
    capacity = 0
    for row in rows:
        if not row["passed"]:
            break
        capacity = row["sessions"]
    return capacity


def _run_media(llm_url: str, options: CapacityOptions) -> list[dict[str, Any]]:
    if not options.media_steps:
        return []
    window = {"PARLEY_SIGNAL_WINDOW_S": str(options.hold_s)}
    runtime = RuntimeProcess(llm_url, window, "capacity-media-runtime.log")
    print(f"\nmedia capacity: runtime {runtime.url} (log {runtime.log_path})", flush=True)
    runtime.start()
    try:
        return asyncio.run(_media_steps(runtime, options))
    finally:
        runtime.stop()


def _run_conversation(
    llm_url: str, options: CapacityOptions, slo_ms: float
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not options.conversation_steps:
        return rows
    for sessions in options.conversation_steps:
        runtime = RuntimeProcess(llm_url, {}, "capacity-conversation-runtime.log")
        print(
            f"\nconversation: {sessions} sessions at {options.duty_cycle:.0%} duty cycle"
            f" for {options.conversation_s:.0f} s (runtime {runtime.url})",
            flush=True,
        )
        runtime.start()
        try:
            rows.append(asyncio.run(_conversation_step(runtime, sessions, options, slo_ms)))
        finally:
            runtime.stop()
        print(_CONVERSATION_HEADER)
        for row in rows:
            print(_conversation_row(row), flush=True)
        if not rows[-1]["passed"] and not options.keep_going:
            break
    return rows
