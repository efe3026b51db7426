"""`parley soak`: N concurrent real WebRTC sessions against one runtime for a set time.

Each session alternates active periods (questions back to back, some of them long questions
whose answers it interrupts) and idle periods (silence), so that about `duty_cycle` of its
wall time is active; session starts are staggered over a ramp. It measures, as
`parley bench latency` does (`dialogue.py`): V2V and barge-in at this client, TTFA from the
runtime's `metrics` events; it reports its own V2V and barge-in back on the `events` channel
(`client_metrics`) so the runtime's SCOS carries them too. It counts turn outcomes, error
events by code, rejections (429 or 503: it waits `Retry-After` and tries again while time
remains)
and sessions the server ended, scrapes `GET /v1/scos`, prints a progress line to stderr and
ends with one JSON summary of at most 4 KiB (a Kubernetes termination message holds 4096
bytes) and a verdict against the criteria.

Exit status: 0 when the run happened, whatever the verdict (`"passed": false` is a result);
2 when the harness failed: bad arguments, a target that never answered, no session ever
connected. It sends traffic to the target only, and stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from parley.security.tokens import TokenSet, read_token_file
from parley_bench.dialogue import ask, interrupt
from parley_bench.durations import format_duration
from parley_bench.loop_lag import LoopLagProbe
from parley_bench.peer import AgentRecorder, Peer
from parley_bench.scos_watch import ScosWatcher
from parley_bench.speech import speech
from parley_bench.stats import percentile, percentiles

log = logging.getLogger(__name__)

SCHEMA = "parley.soak/v1"
SUMMARY_LIMIT_BYTES = 4096  # Kubernetes keeps at most this much of a termination message
#: One wait within a turn (first audio, the answer's end) gives up after this.
TURN_WAIT_S = 30.0
#: A whole turn, interruption and its answer included, gives up after this.
TURN_LIMIT_S = 75.0
CONNECT_TIMEOUT_S = 20.0
RETRY_AFTER_MAX_S = 30.0
CONNECT_BACKOFF_S = 5.0
#: After the run's end a turn in flight may finish within this; then everything is cancelled.
STOP_GRACE_S = 45.0
PREFLIGHT_MAX_S = 30.0
#: DESIGN.md: a session is in steady state after 3 turns or 60 s.
WARM_UP_TURNS = 3
WARM_UP_S = 60.0
#: What a soak peer keeps of the events channel and of the agent's audio (bounded memory).
EVENT_TYPES = frozenset({"state", "metrics", "error"})
AGENT_HISTORY_S = 60.0
_FOREVER_S = 365 * 24 * 3600.0
#: Outcomes of a turn; the last three are failures.
OUTCOMES = ("answered", "interrupted", "not_interrupted", "no_answer", "error", "cut")
FAILED_OUTCOMES = ("no_answer", "error", "cut")
#: Pipeline stages of the `metrics` event, reported as [p50, p95] to show where TTFA goes.
STAGES = ("asr_ms", "llm_first_token_ms", "llm_first_sentence_ms", "tts_first_chunk_ms")

QUESTIONS = [
    "Which planet is closest to the sun?",
    "How many minutes are in an hour?",
    "What do cows drink?",
    "What is the color of grass?",
    "How many wheels does a bicycle have?",
    "What is frozen water called?",
    "Which animal says moo?",
    "What do you use to write on paper?",
    "How many months are in a year?",
    "What shape is a ball?",
    "What is the sun made of?",
    "Which season comes after winter?",
    "What do plants need to grow?",
    "How many hours are in a day?",
    "What is the tallest animal?",
    "Where does rain come from?",
]
LONG_QUESTIONS = [
    "Please describe, in detail, how a train travels from one city to another.",
    "Tell me everything you know about the history of the bicycle.",
    "Explain at length how bread is baked, from the flour to the oven.",
]
INTERRUPTIONS = [
    "Sorry, stop there, let me ask something else.",
    "Hold on, that is enough, thank you.",
]


class HarnessError(RuntimeError):
    """The soak could not measure anything meaningful (exit status 2)."""


@dataclass(frozen=True)
class Criteria:
    """Pass/fail limits; None leaves a criterion out. Defaults: DESIGN.md's SLOs."""

    max_ttfa_p95_ms: float | None = 250.0
    max_barge_in_p95_ms: float | None = 150.0
    max_error_rate: float | None = 0.01


@dataclass(frozen=True)
class SoakConfig:
    target: str
    sessions: int
    duration_s: float
    duty_cycle: float = 0.3
    barge_in_share: float = 0.2
    seed: int = 0
    cycle_s: float = 60.0  # one active + idle period, on average
    call_s: float | None = None  # hang up after about this long and dial again; None: never
    ramp_s: float | None = None  # session starts spread over this; default min(cycle, 1/5 run)
    scrape_interval_s: float = 5.0
    progress_interval_s: float = 5.0
    criteria: Criteria = field(default_factory=Criteria)
    # A bearer token for creating sessions, one a line (a soak Job's: the runtime's admin token,
    # so that its load from one client is not rate-limited); read again when it changes.
    token_file: str | None = None

    def check(self) -> None:
        """Raise `ValueError` naming the first bad setting."""
        if self.token_file is not None:
            try:
                if not read_token_file(self.token_file):
                    raise ValueError(f"--token-file {self.token_file} holds no token")
            except OSError as exc:
                raise ValueError(f"--token-file cannot be read: {exc}") from exc
        if not self.target.startswith(("http://", "https://")):
            raise ValueError(f"--target must be an http(s) URL, got {self.target!r}")
        if self.sessions < 1:
            raise ValueError(f"--sessions must be at least 1, got {self.sessions}")
        if self.duration_s <= 0:
            raise ValueError("--duration must be more than zero")
        if not 0 < self.duty_cycle <= 1:
            raise ValueError(f"--duty-cycle must be in (0, 1], got {self.duty_cycle}")
        if not 0 <= self.barge_in_share <= 1:
            raise ValueError(f"--barge-in-share must be in [0, 1], got {self.barge_in_share}")
        if self.cycle_s <= 0 or (self.ramp_s is not None and self.ramp_s < 0):
            raise ValueError("--cycle must be positive and --ramp not negative")
        if self.call_s is not None and self.call_s <= 0:
            raise ValueError("--call-length must be more than zero")

    @property
    def ramp(self) -> float:
        return self.ramp_s if self.ramp_s is not None else min(self.cycle_s, self.duration_s / 5)


# -- what is counted ------------------------------------------------------------------------


@dataclass
class Tally:
    """Everything the sessions count, shared by all of them (one event loop: no locks)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    connections: Counter[str] = field(default_factory=Counter)
    samples: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {
            scope: {"v2v": [], "ttfa": [], "barge_in": []} for scope in ("steady", "warm_up")
        }
    )
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    connected: int = 0
    last_connect_error: str | None = None

    def add(self, metric: str, value: float, steady: bool) -> None:
        self.samples["steady" if steady else "warm_up"][metric].append(value)

    def values(self, metric: str, scope: str = "all") -> list[float]:
        if scope == "all":
            return self.samples["steady"][metric] + self.samples["warm_up"][metric]
        return self.samples[scope][metric]

    @property
    def attempted(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return sum(self.outcomes[o] for o in FAILED_OUTCOMES)

    def error_rate(self) -> float | None:
        """Failed turns and failed connection attempts over all turns and such attempts
        (429 and 503 rejections are rate limits and load shedding, counted apart, not errors)."""
        attempts = self.attempted + self.connections["failed"]
        if not attempts:
            return None
        return round((self.failed + self.connections["failed"]) / attempts, 4)

    def stage_percentiles(self) -> dict[str, list[float | None]]:
        return {
            stage: [percentile(values, 50), percentile(values, 95)]
            for stage, values in self.stages.items()
        }

    def latency(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            scope: {m: percentiles(self.values(m, scope)) for m in ("v2v", "ttfa", "barge_in")}
            for scope in ("steady", "warm_up", "all")
        }


@dataclass
class _Connection:
    """One connected session: its peer, and what has been read of its events."""

    peer: Peer
    opened_at: float
    turns: int = 0  # as the runtime counts them: an interruption is a turn of its own
    harvested: int = 0

    def steady(self, now: float) -> bool:
        return self.turns >= WARM_UP_TURNS or now - self.opened_at >= WARM_UP_S

    def harvest(self, tally: Tally) -> list[str]:
        """Count the `metrics` and `error` events not read yet; return the error codes."""
        codes = []
        for at, event in self.peer.events[self.harvested :]:
            if event.get("type") == "metrics" and event.get("ttfa_ms") is not None:
                steady = event.get("steady")
                if not isinstance(steady, bool):  # a runtime that does not say
                    turn = event.get("turn")
                    steady = (isinstance(turn, int) and turn > WARM_UP_TURNS) or (
                        at - self.opened_at >= WARM_UP_S
                    )
                tally.add("ttfa", float(event["ttfa_ms"]), steady)
                for stage, values in tally.stages.items():
                    if isinstance(event.get(stage), int | float):
                        values.append(float(event[stage]))
            elif event.get("type") == "error":
                code = str(event.get("code") or "unknown")
                tally.errors[code] += 1
                codes.append(code)
        self.harvested = len(self.peer.events)
        return codes


# -- the verdict and the summary -------------------------------------------------------------


def verdict(
    criteria: Criteria,
    latency: dict[str, dict[str, dict[str, Any]]],
    error_rate: float | None,
    answered: int,
) -> tuple[dict[str, dict[str, Any]], bool]:
    """Each criterion's result, and whether the run passed.

    Latency criteria are judged on the steady state, or on all turns when the run had no
    steady-state sample (a short run). A criterion without any sample is `passed: null` and
    fails nothing by itself; but a run in which no turn was answered does not pass."""
    results: dict[str, dict[str, Any]] = {}
    for name, limit, metric in (
        ("ttfa_p95_ms", criteria.max_ttfa_p95_ms, "ttfa"),
        ("barge_in_p95_ms", criteria.max_barge_in_p95_ms, "barge_in"),
    ):
        if limit is None:
            continue
        scope = "steady" if latency["steady"][metric]["n"] else "all"
        value = latency[scope][metric]["p95_ms"]
        results[name] = {
            "max": limit,
            "value": value,
            "scope": scope,
            "passed": None if value is None else value <= limit,
        }
    if criteria.max_error_rate is not None:
        results["error_rate"] = {
            "max": criteria.max_error_rate,
            "value": error_rate,
            "passed": None if error_rate is None else error_rate <= criteria.max_error_rate,
        }
    results["answered_turns"] = {"min": 1, "value": answered, "passed": answered >= 1}
    passed = all(result["passed"] is not False for result in results.values())
    return results, passed


def fit_summary(summary: dict[str, Any], limit: int = SUMMARY_LIMIT_BYTES) -> str:
    """The summary as compact JSON of fewer than `limit` bytes. Whatever is unbounded (error
    codes, strings from the server, the SCOS snapshot) is cut first, then detail; the verdict,
    criteria and counts are always kept. A cut summary says `"truncated": true`."""

    def encoded(data: dict[str, Any]) -> str:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    text = encoded(summary)
    if len(text.encode()) < limit:
        return text
    cut: dict[str, Any] = _shorten_strings(summary, 120)
    cut["truncated"] = True
    errors = Counter(cut.get("errors") or {})
    if len(errors) > 8:
        kept = dict(errors.most_common(8))
        kept["other"] = sum(errors.values()) - sum(kept.values())
        cut["errors"] = kept
    drops = (
        ("scos", "last"),
        ("stages_p50_p95_ms",),
        ("latency", "warm_up"),
        ("latency", "all"),
        ("scos",),
    )
    for drop in drops:
        text = encoded(cut)
        if len(text.encode()) < limit:
            return text
        parent = cut
        for key in drop[:-1]:
            parent = parent.get(key) or {}
        parent.pop(drop[-1], None)
    essential = ("schema", "passed", "harness_error", "criteria", "turns", "error_rate")
    text = encoded({k: cut[k] for k in essential if k in cut} | {"truncated": True})
    if len(text.encode()) < limit:
        return text
    return encoded(
        {"passed": summary.get("passed"), "harness_error": "summary too large", "truncated": True}
    )


def _shorten_strings(data: Any, length: int) -> Any:
    if isinstance(data, str):
        return data if len(data) <= length else data[: length - 1] + "…"
    if isinstance(data, dict):
        return {_shorten_strings(k, length): _shorten_strings(v, length) for k, v in data.items()}
    if isinstance(data, list):
        return [_shorten_strings(v, length) for v in data]
    return data


# -- the run ----------------------------------------------------------------------------------


class Soak:
    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.target = config.target.rstrip("/")
        self.tally = Tally()
        self.lag = LoopLagProbe()
        self._tokens = TokenSet(file=config.token_file) if config.token_file else None
        self._started = 0.0
        self._deadline = 0.0
        self._finished = False

    # -- time -------------------------------------------------------------------------------

    def finish(self) -> None:
        """End the run now (a harness running it for as long as it needs): sessions finish
        the turn they are in and hang up; `run` then returns the summary."""
        self._finished = True

    def _remaining(self) -> float:
        return 0.0 if self._finished else self._deadline - time.monotonic()

    async def _sleep_within_run(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, min(seconds, self._remaining())))

    # -- the whole run ----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started_at = time.time()
        harness_error: str | None = None
        async with httpx.AsyncClient(timeout=5) as http:
            scos = ScosWatcher(http, self.target, self.config.scrape_interval_s)
            try:
                await self._preflight(http)
                await self._prepare_speech()
                self._started = time.monotonic()
                self._deadline = self._started + self.config.duration_s
                async with self.lag.running(), scos.running():
                    progress = asyncio.create_task(self._report_progress(scos))
                    try:
                        await self._run_sessions()
                        await scos.scrape()  # the state at the end, not up to 5 s before
                    finally:
                        progress.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await progress
                if not self.tally.connections["opened"] and not self.tally.connections["rejected"]:
                    raise HarnessError(
                        f"no session could connect to {self.target}: "
                        f"{self.tally.last_connect_error}"
                    )
            except HarnessError as exc:
                harness_error = str(exc)
        elapsed = time.monotonic() - self._started if self._started else 0.0
        return self._summary(started_at, elapsed, scos, harness_error)

    async def _preflight(self, http: httpx.AsyncClient) -> None:
        """The target must answer HTTP at all (any status) within a bounded time."""
        give_up = time.monotonic() + min(PREFLIGHT_MAX_S, self.config.duration_s)
        while True:
            try:
                await http.get(f"{self.target}/healthz")
                return
            except httpx.HTTPError as exc:
                if time.monotonic() >= give_up:
                    raise HarnessError(
                        f"target {self.target} unreachable: {type(exc).__name__}: {exc}"
                    ) from exc
            await asyncio.sleep(1.0)

    async def _prepare_speech(self) -> None:
        """Synthesize every utterance before the clock starts: Piper must not compete with
        the sessions (or be timed in them)."""
        for text in (*QUESTIONS, *LONG_QUESTIONS, *INTERRUPTIONS):
            await speech(text)

    async def _run_sessions(self) -> None:
        step = self.config.ramp / self.config.sessions
        sessions = [
            asyncio.create_task(self._session(i, i * step), name=f"soak-{i}")
            for i in range(self.config.sessions)
        ]
        done, pending = await asyncio.wait(sessions, timeout=self.config.duration_s + STOP_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise HarnessError(f"a session task failed: {task.exception()!r}")

    # -- one session ------------------------------------------------------------------------

    async def _session(self, index: int, start_after: float) -> None:
        rng = random.Random(self.config.seed * 1_000_003 + index)
        await self._sleep_within_run(start_after)
        while self._remaining() > 0:
            connection = await self._connect()
            if connection is None:
                return
            self.tally.connected += 1
            try:
                await self._converse(connection, rng)
            finally:
                self.tally.connected -= 1
                connection.harvest(self.tally)
                await connection.peer.close()

    async def _connect(self) -> _Connection | None:
        """Connect, waiting out 429s and 503s (Retry-After), retrying failures while it lasts."""
        while self._remaining() > 0:
            peer = Peer(
                self.target,
                agent=AgentRecorder(keep_s=AGENT_HISTORY_S, keep_audio=False),
                event_types=EVENT_TYPES,
                token=self._tokens.tokens()[0] if self._tokens else None,
            )
            try:
                await peer.connect(timeout=CONNECT_TIMEOUT_S)
                await peer.wait_state("listening", CONNECT_TIMEOUT_S)
            except httpx.HTTPStatusError as exc:
                await peer.close()
                if exc.response.status_code in (429, 503):  # rate-limited or shedding: wait
                    self.tally.connections["rejected"] += 1
                    await self._sleep_within_run(_retry_after(exc.response))
                    continue
                self._connect_failed(f"connect_http_{exc.response.status_code}", exc)
            except TimeoutError as exc:
                await peer.close()
                self._connect_failed("connect_timeout", exc)
            except Exception as exc:  # unreachable, refused, a broken answer: count and retry
                await peer.close()
                self._connect_failed("connect_failed", exc)
            else:
                self.tally.connections["opened"] += 1
                return _Connection(peer, time.monotonic())
            await self._sleep_within_run(CONNECT_BACKOFF_S)
        return None

    def _connect_failed(self, code: str, exc: BaseException) -> None:
        self.tally.connections["failed"] += 1
        self.tally.errors[code] += 1
        self.tally.last_connect_error = f"{type(exc).__name__}: {exc}"[:200]

    async def _converse(self, connection: _Connection, rng: random.Random) -> None:
        """Active periods of back-to-back turns, then idle periods, until the run ends, the
        call has lasted its length (the client hangs up; `_session` dials again) or the server
        ends the session."""
        duty = self.config.duty_cycle
        active_target = duty * self.config.cycle_s
        call_s = self.config.call_s
        hang_up_at = connection.opened_at + call_s * rng.uniform(0.75, 1.25) if call_s else math.inf

        def left() -> float:
            return min(self._remaining(), hang_up_at - time.monotonic())

        while left() > 0:
            period_start = time.monotonic()
            while True:
                if await self._turn(connection, rng) == "cut":
                    return
                active = time.monotonic() - period_start
                if active >= active_target or left() <= 0:
                    break
            idle = active * (1 - duty) / duty * rng.uniform(0.8, 1.2)
            if min(idle, left()) > 0 and await self._idle(connection, min(idle, left())):
                return
        self.tally.connections["hung_up" if self._remaining() > 0 else "open_at_end"] += 1

    async def _idle(self, connection: _Connection, seconds: float) -> bool:
        """Stay silent for `seconds`; True when the server ended the session meanwhile."""
        try:
            await asyncio.wait_for(
                _trouble(connection.peer, time.monotonic(), errors=False), seconds
            )
        except TimeoutError:
            return False
        self._cut()
        return True

    def _cut(self) -> None:
        self.tally.connections["cut"] += 1

    async def _turn(self, connection: _Connection, rng: random.Random) -> str:
        """One question (or one interrupted long answer); returns its outcome."""
        peer, started = connection.peer, time.monotonic()
        steady = connection.steady(started)
        barge_in = rng.random() < self.config.barge_in_share
        work: Awaitable[Any]
        if barge_in:
            connection.turns += 2
            work = interrupt(
                peer, rng.choice(LONG_QUESTIONS), rng.choice(INTERRUPTIONS), TURN_WAIT_S
            )
        else:
            connection.turns += 1
            work = ask(peer, rng.choice(QUESTIONS), TURN_WAIT_S)
        outcome, result = await _first_of(asyncio.wait_for(work, TURN_LIMIT_S), peer, started)
        errors = connection.harvest(self.tally)
        if outcome == "exception":
            # A broken turn must not end a long soak: count it, say what it was, go on.
            log.warning("soak turn failed: %r", result)
            self.tally.errors["client_exception"] += 1
            outcome = "error"
        if outcome == "ok" and errors:
            outcome = "error"
        if outcome == "ok" and barge_in:
            if result is None:
                outcome = "not_interrupted"
            else:
                outcome = "interrupted"
                self.tally.add("barge_in", result, steady)
                peer.send_client_metrics(barge_in_ms=result)
        elif outcome == "ok":
            outcome = "answered"
            self.tally.add("v2v", result.v2v_ms, steady)
            peer.send_client_metrics(v2v_ms=result.v2v_ms)
        self.tally.outcomes[outcome] += 1
        if outcome == "cut":
            self._cut()
        elif outcome in FAILED_OUTCOMES:
            await _settle(peer)
        return outcome

    # -- reporting --------------------------------------------------------------------------

    async def _report_progress(self, scos: ScosWatcher) -> None:
        while True:
            await asyncio.sleep(self.config.progress_interval_s)
            print(self.progress_line(scos), file=sys.stderr, flush=True)

    def progress_line(self, scos: ScosWatcher) -> str:
        t = self.tally

        def p95(metric: str) -> str:
            value = percentile(t.values(metric), 95)
            return "-" if value is None else f"{value:.0f} ms"

        elapsed = time.monotonic() - self._started
        level = scos.max_level_name or ("no scos" if not scos.scrapes else "?")
        return (
            f"[soak] {format_duration(elapsed)}/{format_duration(self.config.duration_s)}"
            f"  sessions {t.connected}/{self.config.sessions}"
            f"  turns {t.attempted} (failed {t.failed})"
            f"  ttfa p95 {p95('ttfa')}  v2v p95 {p95('v2v')}  barge-in p95 {p95('barge_in')}"
            f"  errors {sum(t.errors.values())}  rejected {t.connections['rejected']}"
            f"  cut {t.connections['cut']}  max level {level}"
        )

    def _summary(
        self, started_at: float, elapsed: float, scos: ScosWatcher, harness_error: str | None
    ) -> dict[str, Any]:
        t, config = self.tally, self.config
        latency = t.latency()
        error_rate = t.error_rate()
        answered = t.outcomes["answered"] + t.outcomes["interrupted"]
        answered += t.outcomes["not_interrupted"]
        results, passed = verdict(config.criteria, latency, error_rate, answered)
        return {
            "schema": SCHEMA,
            "target": self.target,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
            "sessions": config.sessions,
            "duration_s": config.duration_s,
            "elapsed_s": round(elapsed, 1),
            "duty_cycle": config.duty_cycle,
            "barge_in_share": config.barge_in_share,
            "seed": config.seed,
            "turns": {"attempted": t.attempted, **{o: t.outcomes[o] for o in OUTCOMES}},
            "latency": latency,
            "stages_p50_p95_ms": t.stage_percentiles(),
            "errors": dict(t.errors.most_common()),
            "error_rate": error_rate,
            "connections": {
                k: t.connections[k]
                for k in ("opened", "hung_up", "open_at_end", "rejected", "failed", "cut")
            },
            "client_loop_lag_p95_ms": self.lag.p95_ms(),
            "scos": scos.summary(),
            "criteria": results,
            "passed": passed and harness_error is None,
            "harness_error": harness_error,
        }


def _retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("retry-after", CONNECT_BACKOFF_S))
    except ValueError:
        seconds = CONNECT_BACKOFF_S
    return min(max(1.0, seconds), RETRY_AFTER_MAX_S)


async def _trouble(peer: Peer, since: float, errors: bool = True) -> str:
    """Wait until the server ends the session ("cut") or, with `errors`, reports an error
    ("error"), whichever comes first."""

    def bad(event: dict[str, Any]) -> bool:
        if event.get("type") == "state":
            return event.get("state") == "ended"
        return errors and event.get("type") == "error"

    ended = asyncio.ensure_future(peer.wait_for(bad, _FOREVER_S, after=since))
    lost = asyncio.ensure_future(peer.disconnected.wait())
    try:
        await asyncio.wait({ended, lost}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        lost.cancel()
    if ended.done() and not ended.cancelled() and ended.exception() is None:
        return "error" if ended.result()[1].get("type") == "error" else "cut"
    return "cut"


async def _first_of(work: Awaitable[Any], peer: Peer, since: float) -> tuple[str, Any]:
    """Run a turn against trouble on the session: ("ok", result), ("no_answer", None) when
    the agent did not answer in time, ("error" | "cut", None), or ("exception", the
    exception) when the turn itself broke."""
    turn = asyncio.ensure_future(work)
    trouble = asyncio.ensure_future(_trouble(peer, since))
    try:
        await asyncio.wait({turn, trouble}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (turn, trouble):
            task.cancel()
        await asyncio.gather(turn, trouble, return_exceptions=True)
    if trouble.done() and not trouble.cancelled():
        return trouble.result(), None
    if turn.cancelled() or isinstance(turn.exception(), TimeoutError):
        return "no_answer", None
    if turn.exception() is not None:
        return "exception", turn.exception()
    return "ok", turn.result()


async def _settle(peer: Peer) -> None:
    """After a failed turn, let the agent finish whatever it still says (bounded)."""
    with contextlib.suppress(TimeoutError):
        await peer.agent.wait_quiet(0.5, 15)


# -- entry point ------------------------------------------------------------------------------


def run_soak(config: SoakConfig, result_file: str | None = None) -> int:
    """Run, print the summary (stdout, and `result_file`), return the exit status."""
    try:
        config.check()
    except ValueError as exc:
        summary: dict[str, Any] = {
            "schema": SCHEMA,
            "target": config.target,
            "passed": False,
            "harness_error": f"bad arguments: {exc}",
        }
    else:
        print(
            f"[soak] {config.sessions} sessions against {config.target} for "
            f"{format_duration(config.duration_s)}, duty cycle {config.duty_cycle:.0%}, "
            f"barge-in share {config.barge_in_share:.0%}, seed {config.seed}",
            file=sys.stderr,
            flush=True,
        )
        try:
            summary = asyncio.run(Soak(config).run())
        except Exception as exc:  # the harness itself broke: still say so in the summary
            summary = {
                "schema": SCHEMA,
                "target": config.target,
                "passed": False,
                "harness_error": f"{type(exc).__name__}: {exc}",
            }
    text = fit_summary(summary)
    print(text, flush=True)
    if result_file:
        path = Path(result_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if summary.get("harness_error"):
        print(f"[soak] harness error: {summary['harness_error']}", file=sys.stderr, flush=True)
        return 2
    verdicts = {True: "ok", False: "FAIL", None: "no data"}
    checked = ", ".join(
        f"{name} {result['value']} ({verdicts[result['passed']]})"
        for name, result in summary["criteria"].items()
    )
    print(
        f"[soak] {'passed' if summary['passed'] else 'NOT passed'}: {checked}",
        file=sys.stderr,
        flush=True,
    )
    return 0
