"""`parley soak`: the load/soak client the operator's soak Jobs run.

The pure parts (durations, the verdict, the 4 KiB summary cap) are tested directly; one short
real soak (two sessions against the shared runtime with the real models and LLM) is run once
through the command line and its summary checked from several sides.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.cli import main
from parley_bench.durations import format_duration, parse_duration
from parley_bench.soak import SUMMARY_LIMIT_BYTES, Criteria, fit_summary, verdict
from tests.support.runtime_host import RunningApp, free_port

# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1.5m", 90), ("45", 45), (" 3M ", 180)],
)
def test_durations_take_seconds_minutes_and_hours(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "-5s", "5d", "m"])
def test_other_durations_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="90s, 10m, 2h"):
        parse_duration(text)


def test_durations_print_compactly() -> None:
    assert [format_duration(s) for s in (7, 245, 3723)] == ["7s", "4m05s", "1h02m03s"]


def test_a_bad_duration_on_the_command_line_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
        main(["soak", "--target", "http://127.0.0.1:1", "--duration", "soon"])
    assert exit_info.value.code == 2


# -- the verdict -----------------------------------------------------------------------------


def latency(
    steady_ttfa: list[float] | None = None,
    all_ttfa: list[float] | None = None,
    barge_in: float | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    def row(p95: float | None) -> dict[str, Any]:
        return {"n": 0 if p95 is None else 5, "p50_ms": p95, "p95_ms": p95}

    steady_p95 = steady_ttfa[0] if steady_ttfa else None
    all_p95 = all_ttfa[0] if all_ttfa else steady_p95
    return {
        "steady": {"ttfa": row(steady_p95), "v2v": row(None), "barge_in": row(barge_in)},
        "all": {"ttfa": row(all_p95), "v2v": row(None), "barge_in": row(barge_in)},
    }


def test_a_run_within_every_criterion_passes() -> None:
    results, passed = verdict(Criteria(250, 150, 0.01), latency([200], barge_in=120), 0.0, 10)
    assert passed
    assert results["ttfa_p95_ms"] == {"max": 250, "value": 200, "scope": "steady", "passed": True}
    assert results["barge_in_p95_ms"]["passed"] and results["error_rate"]["passed"]


@pytest.mark.parametrize(
    ("criteria", "error_rate", "failing"),
    [
        (Criteria(max_ttfa_p95_ms=199), 0.0, "ttfa_p95_ms"),
        (Criteria(max_barge_in_p95_ms=100), 0.0, "barge_in_p95_ms"),
        (Criteria(max_error_rate=0.01), 0.02, "error_rate"),
    ],
)
def test_one_criterion_over_its_limit_fails_the_run(
    criteria: Criteria, error_rate: float, failing: str
) -> None:
    results, passed = verdict(criteria, latency([200], barge_in=120), error_rate, 10)
    assert not passed
    assert [name for name, r in results.items() if r["passed"] is False] == [failing]


def test_latency_is_judged_on_all_turns_when_no_turn_reached_steady_state() -> None:
    results, passed = verdict(Criteria(max_ttfa_p95_ms=250), latency(None, [300]), 0.0, 2)
    assert results["ttfa_p95_ms"]["scope"] == "all" and results["ttfa_p95_ms"]["value"] == 300
    assert not passed


def test_a_criterion_without_samples_says_so_without_failing_the_run() -> None:
    results, passed = verdict(Criteria(), latency([200], barge_in=None), 0.0, 10)
    assert results["barge_in_p95_ms"]["passed"] is None
    assert passed


def test_a_run_that_answered_nothing_does_not_pass() -> None:
    results, passed = verdict(Criteria(None, None, None), latency(), None, 0)
    assert results == {"answered_turns": {"min": 1, "value": 0, "passed": False}}
    assert not passed


def test_a_criterion_set_to_none_is_not_checked() -> None:
    results, _ = verdict(Criteria(None, None, 0.01), latency([9999]), 0.0, 10)
    assert set(results) == {"error_rate", "answered_turns"}


# -- the summary cap -------------------------------------------------------------------------


def test_a_small_summary_is_kept_whole() -> None:
    summary = {"schema": "parley.soak/v1", "passed": True, "errors": {"llm_unavailable": 2}}
    assert json.loads(fit_summary(summary)) == summary


def test_an_oversized_summary_is_cut_below_4_kib_keeping_the_verdict() -> None:
    summary = {
        "schema": "parley.soak/v1",
        "target": "http://" + "x" * 5000,
        "turns": {"attempted": 100, "answered": 90, "error": 10},
        "errors": {f"code_{i}_{'y' * 40}": i for i in range(300)},
        "error_rate": 0.1,
        "scos": {"scrapes": 3, "last": {"reasons": ["z" * 3000]}},
        "criteria": {"error_rate": {"max": 0.01, "value": 0.1, "passed": False}},
        "passed": False,
        "harness_error": None,
    }
    text = fit_summary(summary)
    assert len(text.encode()) < SUMMARY_LIMIT_BYTES
    cut = json.loads(text)
    assert cut["truncated"] is True
    assert cut["passed"] is False and cut["criteria"] == summary["criteria"]
    assert cut["turns"] == summary["turns"]
    assert len(cut["errors"]) == 9 and cut["errors"]["other"] > 0


def test_even_a_pathological_summary_fits() -> None:
    summary = {"passed": False, "criteria": {f"c{i}": "v" * 100 for i in range(200)}}
    assert len(fit_summary(summary).encode()) < SUMMARY_LIMIT_BYTES


# -- a real soak -----------------------------------------------------------------------------


@dataclass
class SoakRun:
    status: int
    summary: dict[str, Any]
    stdout: str
    stderr: str
    result_file: Path


def run_cli(args: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(args)
    return status, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def soak_run(runtime: RunningApp, tmp_path_factory: pytest.TempPathFactory) -> SoakRun:
    """Two sessions for 35 s at a 50 % duty cycle, calls of about 12 s, with a TTFA criterion
    no run can meet."""
    result_file = tmp_path_factory.mktemp("soak") / "termination-log"
    status, stdout, stderr = run_cli(
        [
            "soak",
            "--target",
            runtime.url,
            "--sessions",
            "2",
            "--duration",
            "35s",
            "--duty-cycle",
            "0.5",
            "--seed",
            "7",
            "--call-length",
            "12s",
            "--max-ttfa-p95-ms",
            "1",
            "--result-file",
            str(result_file),
        ]
    )
    return SoakRun(status, json.loads(stdout.strip()), stdout, stderr, result_file)


@pytest.mark.e2e
def test_a_short_soak_measures_real_turns(soak_run: SoakRun) -> None:
    summary = soak_run.summary
    assert summary["schema"] == "parley.soak/v1"
    assert summary["sessions"] == 2 and summary["duration_s"] == 35
    turns = summary["turns"]
    assert turns["attempted"] > 0
    assert turns["answered"] + turns["interrupted"] + turns["not_interrupted"] > 0
    assert summary["latency"]["all"]["ttfa"]["n"] > 0
    assert summary["latency"]["all"]["v2v"]["n"] > 0
    connections = summary["connections"]
    assert connections["rejected"] == 0 and connections["cut"] == 0
    # Calls of 9-15 s in 35 s: each session hung up and dialled again at least once. Every call
    # was hung up by the client or still open when the run ended (none, if a session hung up
    # just before the end).
    assert connections["hung_up"] >= 2
    assert connections["opened"] == connections["hung_up"] + connections["open_at_end"]
    assert connections["open_at_end"] <= 2
    assert summary["scos"]["scrapes"] > 0 and summary["scos"]["last"]["capacity"] >= 2
    assert "[soak]" in soak_run.stderr and "sessions" in soak_run.stderr


@pytest.mark.e2e
def test_the_summary_fits_a_termination_message(soak_run: SoakRun) -> None:
    written = soak_run.result_file.read_text()
    assert written == soak_run.stdout.strip()
    assert len(written.encode()) < SUMMARY_LIMIT_BYTES


@pytest.mark.e2e
def test_a_failed_criterion_is_a_result_with_exit_status_0(soak_run: SoakRun) -> None:
    assert soak_run.status == 0
    assert soak_run.summary["harness_error"] is None
    assert soak_run.summary["passed"] is False
    ttfa = soak_run.summary["criteria"]["ttfa_p95_ms"]
    assert ttfa["max"] == 1 and ttfa["passed"] is False and ttfa["value"] > 1


@pytest.mark.e2e
def test_the_client_reports_its_latencies_into_scos(soak_run: SoakRun, runtime: RunningApp) -> None:
    scos = httpx.get(f"{runtime.url}/v1/scos").json()
    reported = [scos["latency"][scope]["v2v"]["samples"] for scope in ("steady", "warm_up")]
    assert sum(reported) > 0


def test_an_unreachable_target_is_a_harness_failure() -> None:
    target = f"http://127.0.0.1:{free_port()}"
    status, stdout, stderr = run_cli(["soak", "--target", target, "--duration", "2s"])
    assert status == 2
    summary = json.loads(stdout.strip())
    assert summary["passed"] is False
    assert summary["harness_error"].startswith(f"target {target} unreachable")
    assert "harness error" in stderr and target in stderr


def test_bad_arguments_are_a_harness_failure() -> None:
    status, stdout, _ = run_cli(["soak", "--target", "http://x", "--duty-cycle", "1.5"])
    assert status == 2
    assert "--duty-cycle" in json.loads(stdout)["harness_error"]


def test_an_unreadable_or_empty_token_file_is_a_harness_failure(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("# no token here\n")
    for path, said in ((empty, "holds no token"), (tmp_path / "missing", "cannot be read")):
        status, stdout, _ = run_cli(["soak", "--target", "http://x", "--token-file", str(path)])
        assert status == 2
        error = json.loads(stdout)["harness_error"]
        assert "--token-file" in error and said in error
