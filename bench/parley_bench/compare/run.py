"""`parley bench compare`: Parley and Pipecat, one after the other in one run, on the same
models, the same machine and the same scripted conversation, timed by the same client.

It starts the embedded LLM server once (llama.cpp with SmolLM2-135M-Instruct, as `parley
demo` does) and, for each stack in `--stacks` order, starts the stack's server on loopback,
waits for its health, plays the conversation (`--sessions` at once, each at `--duty-cycle`,
starts staggered) and stops it. The conversation is spoken by espeak-ng voices, rotating
speakers and rates, with a fixed `--seed`. It prints a line per turn, then the table (see
`report.py`), and writes every turn to `--json`.

Exit status 0 when every stack ran, 1 when one could not be started or measured (the table
says which and why), 2 for bad arguments.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from parley.local_llm import LLMServer
from parley_bench.child_server import ChildServer, free_port
from parley_bench.compare.cpu import CpuMeter, cpu_use
from parley_bench.compare.report import format_table, ratios, stack_summary
from parley_bench.compare.script import SPEAKER_SETS, Speakers, Turn, conversation, lines
from parley_bench.compare.session import converse
from parley_bench.compare.stacks import SIGNALLING, STACKS, START_TIMEOUT_S, stack_server
from parley_bench.compare.voices import spoken
from parley_bench.results import write_results
from parley_runtime.webrtc import use_host_addresses

#: Concurrent sessions start this far apart, so their first questions do not coincide.
STAGGER_S = 2.0


@dataclass(frozen=True)
class CompareOptions:
    stacks: tuple[str, ...] = STACKS
    turns: int = 16
    barge_ins: int = 6
    seed: int = 0
    sessions: int = 1
    duty_cycle: float = 1.0
    speakers: Speakers = "varied"
    parley_url: str | None = None  # a running Parley runtime, used instead of starting one
    llm_url: str | None = None  # a running LLM server serving SmolLM2, instead of starting one
    out: str | None = "bench/results/compare.json"

    def check(self) -> None:
        """Raise `ValueError` naming the first bad setting."""
        unknown = [s for s in self.stacks if s not in STACKS]
        if unknown or not self.stacks:
            raise ValueError(f"--stacks takes {','.join(STACKS)} (some of them), got {unknown}")
        if self.turns < 1 or not 0 <= self.barge_ins <= self.turns:
            raise ValueError("--turns must be at least 1, --barge-ins between 0 and --turns")
        if self.sessions < 1:
            raise ValueError(f"--sessions must be at least 1, got {self.sessions}")
        if self.speakers not in SPEAKER_SETS:
            raise ValueError(f"--speakers takes {' or '.join(SPEAKER_SETS)}, got {self.speakers}")
        if not 0 < self.duty_cycle <= 1:
            raise ValueError(f"--duty-cycle must be in (0, 1], got {self.duty_cycle}")


def progress(message: str) -> None:
    print(f"[compare] {message}", flush=True)


def turn_line(stack: str, session: int, index: int, total: int, record: dict[str, Any]) -> str:
    outcome = record["outcome"]
    if outcome == "answered":
        result = f"V2V {record['v2v_ms']:.0f} ms"
    elif outcome == "interrupted":
        result = f"barge-in {record['barge_in_ms']:.0f} ms"
    else:
        result = outcome.replace("_", " ")
    if record["server_errors"]:
        result += f" (server: {', '.join(record['server_errors'])})"
    if record["talked_over"]:
        result += " (the agent spoke during the question)"
    return (
        f"{stack} s{session + 1} turn {index + 1}/{total} {record['kind']:<8} "
        f"{record['speaker']:<20} {result}"
    )


async def _play(
    stack: str, url: str, scripts: list[list[Turn]], options: CompareOptions
) -> list[list[dict[str, Any]] | BaseException]:
    def reporter(session: int, total: int) -> Any:
        return lambda index, record: progress(turn_line(stack, session, index, total, record))

    sessions = [
        converse(
            url,
            SIGNALLING[stack],
            script,
            session=session,
            duty_cycle=options.duty_cycle,
            seed=options.seed * 1_000_003 + session,
            start_after_s=session * STAGGER_S,
            on_turn=reporter(session, len(script)),
        )
        for session, script in enumerate(scripts)
    ]
    return await asyncio.gather(*sessions, return_exceptions=True)


def _measure(
    stack: str,
    llm: LLMServer | None,
    scripts: list[list[Turn]],
    options: CompareOptions,
) -> dict[str, Any]:
    """Start `stack` (unless it is given by URL), play the scripts, stop it."""
    llm_url = options.llm_url or (llm.url if llm else None)
    llm_slots = llm.slots if llm else 0  # a server given by URL: its slots are unknown
    server: ChildServer | None = None
    if stack == "parley" and options.parley_url:
        url = options.parley_url.rstrip("/")
        progress(f"{stack}: the running runtime at {url}")
    else:
        assert llm_url is not None
        server = stack_server(stack, llm_url, llm_slots, options.seed, progress)
        progress(f"{stack}: starting {server.url} (log {server.log_path})")
        server.start(START_TIMEOUT_S)
        url = server.url
    groups = {"stack": server.pid} if server else {}
    if llm is not None:
        groups["llm_server"] = llm.pid
    meter = CpuMeter(groups)
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        before = meter.sample()
        outcomes = asyncio.run(_play(stack, url, scripts, options))
        used = cpu_use(before, meter.sample())
    finally:
        if server is not None:
            server.stop()
    records = [r for o in outcomes if not isinstance(o, BaseException) for r in o]
    failures = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    for failure in failures:
        progress(f"{stack}: a session failed: {failure}")
    return {
        "url": url,
        "elapsed_s": round(time.monotonic() - started, 1),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "session_failures": failures,
        "summary": stack_summary(records) | {"cpu_cores": used},
        "turns": records,
    }


def compare(options: CompareOptions) -> dict[str, Any]:
    use_host_addresses(["127.0.0.1"])
    scripts = [
        conversation(options.turns, options.barge_ins, options.seed + session, options.speakers)
        for session in range(options.sessions)
    ]
    said = {line for script in scripts for line in lines(script)}
    for text, speaker in said:
        spoken(text, speaker)  # synthesized before any clock starts
    progress(
        f"{options.sessions} session(s) x {options.turns} turns ({options.barge_ins} barge-ins),"
        f" duty cycle {options.duty_cycle:.0%}, seed {options.seed}; {len(said)} lines from"
        f" espeak-ng, {len(SPEAKER_SETS[options.speakers][0])} {options.speakers} speakers;"
        f" stacks {', '.join(options.stacks)}"
    )
    needs_llm = options.llm_url is None and any(
        s != "parley" or not options.parley_url for s in options.stacks
    )
    llm = LLMServer(free_port()) if needs_llm else None
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "options": asdict(options),
        "stacks": {},
    }
    try:
        if llm is not None:
            llm.start()
        for stack in options.stacks:
            try:
                report["stacks"][stack] = _measure(stack, llm, scripts, options)
            except RuntimeError as exc:  # could not start (or install) the stack
                progress(f"{stack}: did not run: {exc}")
                report["stacks"][stack] = {"error": str(exc).splitlines()[0]}
    finally:
        if llm is not None:
            llm.stop()
    summaries = {
        name: (result["summary"] if "summary" in result else {"error": result["error"]})
        for name, result in report["stacks"].items()
    }
    both = all("v2v_ms" in summaries.get(s, {}) for s in STACKS)
    report["parley_over_pipecat"] = (
        ratios(summaries["parley"], summaries["pipecat"]) if both else None
    )
    report["table"] = format_table(summaries, report["parley_over_pipecat"])
    return report


def run_compare(options: CompareOptions) -> int:
    try:
        options.check()
    except ValueError as exc:
        print(f"parley bench compare: {exc}", file=sys.stderr)
        return 2
    report = compare(options)
    print()
    print(report["table"])
    if options.out:
        write_results(report, options.out)
    failed = any(
        "error" in result or result["session_failures"] for result in report["stacks"].values()
    )
    return 1 if failed else 0
