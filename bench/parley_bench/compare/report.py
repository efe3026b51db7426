"""What `parley bench compare` reports, from the turn records alone (pure functions).

Per stack: V2V p50/p95/worst over the questions, barge-in p50/p95 over the interrupted
answers, and every outcome counted (no answer, nothing to interrupt, not stopped), plus how
often the agent spoke while a question was still being said, and the errors a stack reported
(Parley's `error` events: `turn_reset` is a turn its deadline gave up on). Across stacks: the ratio
Parley/Pipecat of each percentile (below 1: Parley is faster). For Parley, the stage
breakdown from its `metrics` events.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from parley_bench.compare.by_ear import OUTCOMES
from parley_bench.stats import percentiles

#: Parley's per-turn stages, in pipeline order (`metrics` event fields).
STAGES = (
    "endpoint_ms",
    "asr_ms",
    "llm_first_token_ms",
    "llm_first_sentence_ms",
    "tts_first_chunk_ms",
    "ttfa_ms",
)


def latency(values: list[float]) -> dict[str, Any]:
    """`{n, p50_ms, p95_ms, worst_ms}`."""
    return {**percentiles(values), "worst_ms": max(values) if values else None}


def stack_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    questions = [r for r in records if r["kind"] == "question"]
    v2v = [r["v2v_ms"] for r in questions if r["v2v_ms"] is not None]
    bargings = [r["barge_in_ms"] for r in records if r["barge_in_ms"] is not None]
    outcomes = Counter(r["outcome"] for r in records)
    summary: dict[str, Any] = {
        "turns": len(records),
        "outcomes": {outcome: outcomes[outcome] for outcome in OUTCOMES},
        "v2v_ms": latency(v2v),
        "barge_in_ms": latency(bargings),
        "talked_over": sum(1 for r in questions if r["talked_over"]),
        "server_errors": dict(Counter(code for r in records for code in r["server_errors"])),
    }
    metrics = [r["metrics"] for r in questions if r["metrics"]]
    if metrics:
        summary["stages_ms"] = {
            stage: percentiles([float(m[stage]) for m in metrics if m.get(stage) is not None])
            for stage in STAGES
        }
        summary["speculative_share"] = round(
            sum(1 for m in metrics if m.get("speculative")) / len(metrics), 2
        )
    return summary


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def ratios(parley: dict[str, Any], pipecat: dict[str, Any]) -> dict[str, float | None]:
    """Parley / Pipecat for each percentile (None where either has no sample)."""
    return {
        f"{metric}_{p}": ratio(
            parley[f"{metric}_ms"][f"{p}_ms"], pipecat[f"{metric}_ms"][f"{p}_ms"]
        )
        for metric in ("v2v", "barge_in")
        for p in ("p50", "p95")
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cpu_line(use: dict[str, float]) -> str:
    """E.g. "used cores: stack 1.21, llm_server 0.35, client 0.30 of 2; machine 93 % busy"."""
    parties = ", ".join(f"{k} {v:.2f}" for k, v in use.items() if not k.startswith("machine_"))
    return (
        f"used cores: {parties} of {use['machine_cores']:.0f}; "
        f"machine {use['machine_busy_share']:.0%} busy"
    )


def format_table(summaries: dict[str, dict[str, Any]], compared: dict[str, Any] | None) -> str:
    """The result table, then the ratios (when both stacks ran), then Parley's stages."""
    header = (
        f"{'stack':<9}{'V2V n':>6}{'p50':>7}{'p95':>7}{'worst':>7}"
        f"{'barge-in n':>11}{'p50':>6}{'p95':>6}"
        f"{'no answer':>10}{'nothing to interrupt':>21}{'not stopped':>12}{'talked over':>12}"
    )
    lines = [header]
    for name, s in summaries.items():
        if "error" in s:
            lines.append(f"{name:<9}did not run: {s['error']}")
            continue
        v, b, o = s["v2v_ms"], s["barge_in_ms"], s["outcomes"]
        lines.append(
            f"{name:<9}{v['n']:>6}{_ms(v['p50_ms']):>7}{_ms(v['p95_ms']):>7}"
            f"{_ms(v['worst_ms']):>7}{b['n']:>11}{_ms(b['p50_ms']):>6}{_ms(b['p95_ms']):>6}"
            f"{o['no_answer']:>10}{o['nothing_to_interrupt']:>21}{o['not_stopped']:>12}"
            f"{s['talked_over']:>12}"
        )
    for name, s in summaries.items():
        if "cpu_cores" in s:
            lines.append(f"{name} {cpu_line(s['cpu_cores'])}")
    for name, s in summaries.items():
        if s.get("server_errors"):
            said = ", ".join(f"{code} x{count}" for code, count in s["server_errors"].items())
            lines.append(f"{name} reported errors: {said}")
    if compared is not None:
        lines.append(
            "Parley/Pipecat: "
            f"V2V p50 {_times(compared['v2v_p50'])}, p95 {_times(compared['v2v_p95'])}; "
            f"barge-in p50 {_times(compared['barge_in_p50'])}, "
            f"p95 {_times(compared['barge_in_p95'])}"
        )
    stages = summaries.get("parley", {}).get("stages_ms")
    if stages:
        lines += ["", f"Parley's stages (its metrics events), ms: {'n':>4}{'p50':>7}{'p95':>7}"]
        for stage, row in stages.items():
            lines.append(
                f"  {stage:<40}{row['n']:>4}{_ms(row['p50_ms']):>7}{_ms(row['p95_ms']):>7}"
            )
        share = summaries["parley"]["speculative_share"]
        lines.append(f"  speculative share of answered questions: {share}")
    return "\n".join(lines)
