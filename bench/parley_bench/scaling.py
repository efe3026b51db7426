"""`parley bench scaling`: the autoscaler, timed and counted, on a real control plane.

Against the cluster in $KUBECONFIG (`make cluster-up`), in a namespace of its own, it runs
`parley operator run` as a separate process (as deployed: its CPU and memory are its own) and
plays kubelet for the runtime pods (`kubelet.py`): every runtime pod the ReplicaSet creates is
a real `parley runtime serve` on its own loopback address, talking to the embedded LLM server
(llama.cpp, as `parley demo` runs it). Two parts:

1. **Overload → scale-up, then scale-down, `--cycles` times, under conversation load.**
   Throughout, `parley soak` sessions at a 30 % duty cycle call in through the runtime Service
   (`service_proxy.py` plays kube-proxy), each call lasting about `--call-length` before it
   hangs up and dials again. The VoiceDeployment keeps the default `intervalSeconds` (5) and
   `backpressureWindowSeconds` (3); the runtime's load steps put a pod at ADMISSION_LIMITED at
   half its session cap (`OVERLOAD_STEPS`), and sizing leaves no headroom (target 100 %, no
   buffer), so only backpressure can ask for the second pod. Each cycle: silent "filler"
   sessions connect to the one pod until its SCOS says ADMISSION_LIMITED; the reaction time is
   from the moment the pod says it entered that level (`backpressure.since`) to the moment the
   runtime Deployment's replicas went up (polled at 10 Hz). Once the new pod is ready the fillers
   hang up; after the (shortened) `scaleDownStabilizationSeconds` the operator drains a pod —
   perhaps one a call landed on, which it waits for — and removes it. Sessions cut are counted
   three ways: the operator's `parley_operator_sessions_cut_total`, calls and fillers the server
   ended (the client's view), and runtimes that did not exit 0 after their drain.
2. **Scraping at scale.** The operator's CPU and RSS over `--scrape-hold` while it scrapes
   `--pods` runtime pods every 5 s, against its idle baseline. A hundred runtimes do not fit on
   this machine: each pod is a SCOS stand-in (`scos_pods.py`: real HTTP on the pod's own
   address, the runtime's own summary model, no media or models).

It prints a line per cycle and a summary, and writes JSON to `--out`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

from parley.local_llm import LLMServer
from parley.scos import BackpressureLevel
from parley_bench.capacity import free_port
from parley_bench.kubelet import RuntimeKubelet
from parley_bench.operator_load import bench_node
from parley_bench.peer import Peer
from parley_bench.proc import cpu_seconds, rss_mib
from parley_bench.results import write_results
from parley_bench.scos_pods import CAPACITY, ScosKubelet, ScosServer
from parley_bench.scos_watch import fetch_scos
from parley_bench.service_proxy import ServiceProxy, ready_addresses
from parley_bench.soak import Criteria, Soak, SoakConfig
from parley_bench.stats import percentile
from parley_operator.api import GROUP, PLURAL, VERSION, crd
from parley_operator.api.types import ScalingSpec
from parley_runtime.webrtc import use_host_addresses

NAMESPACE = "parley-scaling-bench"
CYCLED = "cycled"
SCRAPED = "scraped"
LOG_DIR = Path.home() / ".cache" / "parley" / "logs" / "scaling-bench"
REPO = Path(__file__).resolve().parents[2]
SESSIONS_PER_POD = 8
#: Entry thresholds (share of the session cap) of VISUALS_OFF … SESSION_REJECT: a pod at half
#: its cap is ADMISSION_LIMITED. Measured triggers stay relaxed (kubelet.RUNTIME_ENV): on two
#: shared cores they would fire on their own and blur what is measured.
OVERLOAD_STEPS = "[0.25, 0.375, 0.5, null]"
RUNTIME_PORT = 8080
#: Pod addresses (`kubelet.loopback_address`): the runtimes from 127.0.2.2, the SCOS stand-ins
#: from 127.0.3.2, apart from the test suite's (127.0.0.2 upwards).
RUNTIME_FIRST_INDEX = 500
SCOS_FIRST_INDEX = 750
CUT_METRIC = "parley_operator_sessions_cut_total"
INTERVAL_S = ScalingSpec.model_fields["interval_seconds"].default  # what the bench keeps
T = TypeVar("T")


@dataclass(frozen=True)
class ScalingBenchOptions:
    cycles: int = 20
    sessions: int = 2  # soak calls in progress throughout part 1
    duty_cycle: float = 0.3
    call_s: float = 30.0
    scale_down_window_s: int = 20
    drain_timeout_s: int = 120  # longer than any call: a drain should never need to cut
    pods: int = 100  # part 2; 0 skips it
    scrape_hold_s: float = 60.0
    seed: int = 0
    out: str = "bench/results/scaling.json"


class BenchError(RuntimeError):
    """Something did not happen in time; the message says what."""


# -- the cluster ---------------------------------------------------------------------------------


@dataclass
class Cluster:
    api: client.ApiClient = field(default_factory=lambda: config.new_client_from_config())

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def prepare(self, nodes: int) -> None:
        """The CRD as this tree defines it (server-side apply), the namespace, kwok nodes."""
        client.ApiextensionsV1Api(self.api).patch_custom_resource_definition(
            f"{PLURAL}.{GROUP}",
            crd(),
            field_manager="parley-bench",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        with contextlib.suppress(client.ApiException):
            self.core.create_namespace({"metadata": {"name": NAMESPACE}})  # type: ignore[arg-type]
        for i in range(nodes):
            with contextlib.suppress(client.ApiException):
                self.core.create_node(bench_node(f"scaling-bench-node-{i}"))  # type: ignore[arg-type]
        time.sleep(2)  # the CRD established

    def apply(self, name: str, runtime: dict[str, Any], scaling: dict[str, Any]) -> None:
        manifest = yaml.safe_load((REPO / "examples" / "cpu.yaml").read_text())
        manifest["metadata"] = {"name": name, "namespace": NAMESPACE}
        manifest["spec"]["runtime"].update(runtime)
        manifest["spec"]["scaling"] = scaling
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)

    def delete(self, name: str) -> None:
        with contextlib.suppress(client.ApiException):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        wait_for(lambda: not self.pods(name, every=True), f"{name}'s pods gone", 120)

    def replicas(self, name: str) -> int:
        deployment: Any = self.apps.read_namespaced_deployment(f"{name}-runtime", NAMESPACE)
        return int(deployment.spec.replicas or 0)

    def pods(self, name: str, every: bool = False) -> list[Any]:
        """The runtime pods of `name` (not terminating ones, unless `every`)."""
        listed: Any = self.core.list_namespaced_pod(NAMESPACE, label_selector=selector(name))
        return [p for p in listed.items if every or p.metadata.deletion_timestamp is None]

    def ready_pods(self, name: str) -> list[str]:
        return ready_addresses(self.pods(name))

    def scaling_status(self, name: str) -> dict[str, Any]:
        vd: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        return dict((vd.get("status") or {}).get("scaling") or {})


def selector(name: str) -> str:
    return f"app.kubernetes.io/component=runtime,parley.dev/voicedeployment={name}"


def wait_for(check: Callable[[], T], what: str, timeout: float, poll: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(client.ApiException, httpx.HTTPError):
            if result := check():
                return result
        time.sleep(poll)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


async def until(check: Callable[[], T], what: str, timeout: float, poll: float = 0.25) -> T:
    """`wait_for` off the event loop: the peers' media runs on it."""
    return await asyncio.to_thread(wait_for, check, what, timeout, poll)


# -- the operator --------------------------------------------------------------------------------


class OperatorProcess:
    """`parley operator run -n NAMESPACE` as its own process, with its `/metrics` port."""

    def __init__(self) -> None:
        self.metrics_port = free_port()
        self.log = LOG_DIR / "operator.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @contextlib.contextmanager
    def running(self) -> Iterator[OperatorProcess]:
        env = {**os.environ, "PARLEY_OPERATOR_METRICS_PORT": str(self.metrics_port)}
        command = [sys.executable, "-m", "parley", "operator", "run", "-n", NAMESPACE]
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            wait_for(lambda: self.metrics(), "the operator's /metrics", 60)
            yield self
        finally:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def metrics(self) -> dict[str, float]:
        """Every sample of its `/metrics`, by name and labels (`name{a="b"}`)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples


# -- part 1: cycles ------------------------------------------------------------------------------


@dataclass
class Cycle:
    index: int
    reaction_s: float | None = None
    cause: str | None = None
    fillers: int = 0
    new_pod_ready_s: float | None = None
    scale_down_s: float | None = None
    drained_with_calls: int | None = None
    cut_fillers: int = 0
    error: str | None = None


class Cycles:
    def __init__(
        self, cluster: Cluster, kubelet: RuntimeKubelet, options: ScalingBenchOptions
    ) -> None:
        self.cluster = cluster
        self.kubelet = kubelet
        self.options = options
        self.http = httpx.AsyncClient(timeout=5)
        self.rng = random.Random(options.seed)

    async def run(self, proxy_url: str) -> tuple[list[Cycle], dict[str, Any]]:
        options = self.options
        soak = Soak(
            SoakConfig(
                target=proxy_url,
                sessions=options.sessions,
                duration_s=24 * 3600.0,  # ended by `finish` after the last cycle
                duty_cycle=options.duty_cycle,
                cycle_s=20.0,
                call_s=options.call_s,
                ramp_s=5.0,
                progress_interval_s=3600.0,
                criteria=Criteria(None, None, None),
            )
        )
        calls = asyncio.create_task(soak.run(), name="calls")
        cycles: list[Cycle] = []
        try:
            for index in range(1, options.cycles + 1):
                cycle = Cycle(index)
                cycles.append(cycle)
                try:
                    await self._cycle(cycle)
                except BenchError as exc:
                    cycle.error = str(exc)
                print(describe(cycle, options.cycles), flush=True)
                if cycle.error:
                    break
        finally:
            soak.finish()
            summary = await calls
            await self.http.aclose()
        return cycles, summary

    async def _cycle(self, cycle: Cycle) -> None:
        name, window = CYCLED, self.options.scale_down_window_s
        await until(
            lambda: self.cluster.replicas(name) == 1 and self._serving() == 1,
            "one ready runtime pod",
            timeout=window + self.options.drain_timeout_s + 120,
        )
        (pod,) = [p.metadata.name for p in self.cluster.pods(name)]
        # The cycle's steps take about the same time each round: without a random pause the
        # overload would come at the same phase of the operator's interval every time.
        await asyncio.sleep(self.rng.uniform(0, INTERVAL_S))
        fillers = await self._overload(self.kubelet.url(pod), cycle)
        try:
            entered = (await fetch_scos(self.http, self.kubelet.url(pod))).backpressure.since
            await until(lambda: self.cluster.replicas(name) > 1, "a scale-up", 120, poll=0.1)
            requested = time.time()
            cycle.reaction_s = requested - entered
            await until(lambda: self._serving() == 2, "the new pod ready", 240)
            cycle.new_pod_ready_s = time.time() - requested
            decisions = self.cluster.scaling_status(name).get("decisions") or []
            ups = [d for d in decisions if d.get("direction") == "up"]
            cycle.cause = ups[0].get("cause") if ups else None  # newest first
        finally:
            cycle.cut_fillers = sum(peer.disconnected.is_set() for peer in fillers)
            await asyncio.gather(*(peer.close() for peer in fillers))
        released = time.time()
        drained = await until(
            lambda: list(self.cluster.scaling_status(name).get("drainingPods") or []),
            "a drain",
            window + 60,
        )
        with contextlib.suppress(httpx.HTTPError, KeyError):  # it may be gone already
            scos = await fetch_scos(self.http, self.kubelet.url(drained[0]))
            cycle.drained_with_calls = scos.sessions.active
        await until(
            lambda: self.cluster.replicas(name) == 1 and len(self.cluster.pods(name)) == 1,
            "the drained pod removed",
            self.options.drain_timeout_s + 60,
        )
        cycle.scale_down_s = time.time() - released

    def _serving(self) -> int:
        """Ready pods at the address their runtime serves on (kwok may mark a new pod Ready at
        a fake address for a moment, before the kubelet stand-in writes its own)."""
        addresses = set(self.kubelet.addresses().values())
        return sum(a in addresses for a in self.cluster.ready_pods(CYCLED))

    async def _admission_limited(self, url: str) -> bool:
        scos = await fetch_scos(self.http, url)
        return scos.backpressure.level >= BackpressureLevel.ADMISSION_LIMITED

    async def _overload(self, url: str, cycle: Cycle) -> list[Peer]:
        """Silent sessions on the pod at `url` until it says ADMISSION_LIMITED (or refuses one
        for that reason)."""
        fillers: list[Peer] = []
        while len(fillers) < SESSIONS_PER_POD:
            if await self._admission_limited(url):
                cycle.fillers = len(fillers)
                return fillers
            peer = Peer(url)
            fillers.append(peer)
            try:
                await peer.connect(timeout=20)
                await peer.wait_state("listening", 20)
            except (httpx.HTTPError, TimeoutError) as exc:
                refused = isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 503
                if refused and await self._admission_limited(url):
                    # The calls' sessions took it there between our look and this offer.
                    await fillers.pop().close()
                    cycle.fillers = len(fillers)
                    return fillers
                await asyncio.gather(*(p.close() for p in fillers))
                raise BenchError(f"a filler session could not connect: {exc!r}") from exc
            await asyncio.sleep(1.2)  # the runtime's signal loop (1 s) updates its level
        await asyncio.gather(*(p.close() for p in fillers))
        raise BenchError("the pod never reached ADMISSION_LIMITED")


def describe(cycle: Cycle, cycles: int) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    line = (
        f"cycle {cycle.index}/{cycles}: {cycle.fillers} fillers → ADMISSION_LIMITED;"
        f" replicas requested {s(cycle.reaction_s)} later ({cycle.cause});"
        f" new pod ready {s(cycle.new_pod_ready_s)} after;"
        f" back to 1 pod {s(cycle.scale_down_s)} after the fillers left,"
        f" drained pod had {cycle.drained_with_calls} live calls"
    )
    return f"{line}; FAILED: {cycle.error}" if cycle.error else line


async def _run_cycles(
    cluster: Cluster, kubelet: RuntimeKubelet, options: ScalingBenchOptions
) -> tuple[list[Cycle], dict[str, Any]]:
    use_host_addresses(["127.0.0.1"])
    proxy = ServiceProxy(cluster.core, NAMESPACE, selector(CYCLED), RUNTIME_PORT)
    async with proxy.running():
        return await Cycles(cluster, kubelet, options).run(proxy.url)


def part_cycles(
    cluster: Cluster, operator: OperatorProcess, options: ScalingBenchOptions
) -> dict[str, Any]:
    print(
        f"\npart 1: {options.cycles} overload → scale-up → scale-down cycles, {options.sessions}"
        f" calls at {options.duty_cycle:.0%} duty cycle throughout (logs: {LOG_DIR})",
        flush=True,
    )
    llm = LLMServer(free_port())
    llm.start()
    env = {"PARLEY_BACKPRESSURE_LOAD_STEPS": OVERLOAD_STEPS}
    cut_before = operator.metrics().get(CUT_METRIC, 0.0)
    try:
        kubelet = RuntimeKubelet(
            None, NAMESPACE, selector(CYCLED), llm.url, LOG_DIR, env, RUNTIME_FIRST_INDEX
        )
        with kubelet:
            cluster.apply(
                CYCLED,
                {"replicas": {"min": 1, "max": 3}, "sessionsPerPod": SESSIONS_PER_POD},
                {
                    "targetUtilization": 100,
                    "bufferSessions": 0,
                    "scaleDownStabilizationSeconds": options.scale_down_window_s,
                    "drainTimeoutSeconds": options.drain_timeout_s,
                },
            )
            try:
                cycles, calls = asyncio.run(_run_cycles(cluster, kubelet, options))
            finally:
                cluster.delete(CYCLED)
            exit_codes = dict(kubelet.exit_codes)
    finally:
        llm.stop()
    return cycles_report(
        cycles, calls, operator.metrics().get(CUT_METRIC, 0.0) - cut_before, exit_codes
    )


def cycles_report(
    cycles: list[Cycle], calls: dict[str, Any], operator_cut: float, exit_codes: dict[str, Any]
) -> dict[str, Any]:
    reactions = [c.reaction_s for c in cycles if c.reaction_s is not None]
    completed = [c for c in cycles if c.scale_down_s is not None]
    unclean = {pod: code for pod, code in exit_codes.items() if code != 0}
    return {
        "cycles": [asdict(c) for c in cycles],
        "completed_cycles": len(completed),
        "reaction_s": {
            "n": len(reactions),
            "p50": percentile(reactions, 50),
            "p95": percentile(reactions, 95),
            "max": percentile(reactions, 100),
        },
        "drains_that_waited_for_calls": sum(bool(c.drained_with_calls) for c in completed),
        "sessions_cut": {
            "operator": operator_cut,
            "calls": calls["connections"]["cut"],
            "fillers": sum(c.cut_fillers for c in cycles),
            "runtimes_not_exiting_0": unclean,
        },
        "calls": {k: calls[k] for k in ("turns", "connections", "errors") if k in calls},
    }


# -- part 2: scraping many pods ------------------------------------------------------------------


def operator_load(operator: OperatorProcess, hold_s: float) -> dict[str, float]:
    """The operator's CPU (% of one core) and RSS over `hold_s`."""
    cpu0, started = cpu_seconds(operator.pid), time.monotonic()
    rss_samples = []
    while time.monotonic() - started < hold_s:
        rss_samples.append(rss_mib(operator.pid))
        time.sleep(min(5.0, hold_s))
    wall = time.monotonic() - started
    return {
        "cpu_pct_of_a_core": round((cpu_seconds(operator.pid) - cpu0) / wall * 100, 2),
        "rss_mib": round(rss_samples[-1], 1),
        "rss_max_mib": round(max(rss_samples), 1),
        "seconds": round(wall, 1),
    }


def part_scrape(
    cluster: Cluster, operator: OperatorProcess, options: ScalingBenchOptions
) -> dict[str, Any]:
    pods, hold = options.pods, options.scrape_hold_s
    print(f"\npart 2: the operator scraping {pods} runtime pods for {hold:.0f} s", flush=True)
    idle = operator_load(operator, min(hold, 30.0))
    print(f"  idle: {idle['cpu_pct_of_a_core']} % of a core, RSS {idle['rss_mib']} MiB", flush=True)
    with (
        ScosServer(SCOS_FIRST_INDEX, pods) as server,
        ScosKubelet(None, NAMESPACE, selector(SCRAPED), server),
    ):
        cluster.apply(SCRAPED, {"replicas": {"min": pods, "max": pods}}, {})
        try:
            wait_for(lambda: len(cluster.ready_pods(SCRAPED)) == pods, f"{pods} ready pods", 300)
            wait_for(
                lambda: cluster.scaling_status(SCRAPED).get("capacity") == pods * CAPACITY,
                f"a scaling round that read all {pods} pods",
                60,
            )
            requests_before, before = server.requests, operator.metrics()
            loaded = operator_load(operator, hold)
            after, requests_after = operator.metrics(), server.requests
        finally:
            cluster.delete(SCRAPED)
    rounds = _delta(after, before, 'parley_operator_reconcile_duration_seconds_count{kind="scale"}')
    round_s = _delta(after, before, 'parley_operator_reconcile_duration_seconds_sum{kind="scale"}')
    report = {
        "pods": pods,
        "idle": idle,
        "scraping": loaded,
        "scrapes": _delta(after, before, "parley_operator_scos_scrapes_total"),
        "scrapes_answered": requests_after - requests_before,
        "scrape_failures": sum(
            after[k] - before.get(k, 0.0)
            for k in after
            if k.startswith("parley_operator_scos_scrape_failures_total{")
        ),
        "rounds": rounds,
        "round_mean_ms": round(round_s / rounds * 1000, 1) if rounds else None,
    }
    print(
        f"  scraping {pods} pods: {loaded['cpu_pct_of_a_core']} % of a core,"
        f" RSS {loaded['rss_mib']} MiB (max {loaded['rss_max_mib']});"
        f" {report['scrapes']:.0f} scrapes in {rounds:.0f} rounds,"
        f" {report['scrape_failures']:.0f} failed; a round takes {report['round_mean_ms']} ms",
        flush=True,
    )
    return report


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


# -- the whole run -------------------------------------------------------------------------------


def run_scaling_bench(options: ScalingBenchOptions) -> int:
    if not os.environ.get("KUBECONFIG"):
        raise SystemExit("set KUBECONFIG (e.g. `make cluster-up` prints the export line)")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    cluster = Cluster()
    cluster.prepare(nodes=max(1, math.ceil(options.pods / 900)))
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "options": asdict(options),
    }
    try:
        with OperatorProcess().running() as operator:
            if options.cycles:
                report["cycles"] = part_cycles(cluster, operator, options)
            if options.pods:
                report["scrape"] = part_scrape(cluster, operator, options)
    finally:
        write_results(report, options.out)
    print_summary(report)
    cycles = report.get("cycles")
    return 1 if cycles and cycles["completed_cycles"] < options.cycles else 0


def print_summary(report: dict[str, Any]) -> None:
    if cycles := report.get("cycles"):
        reaction, cut = cycles["reaction_s"], cycles["sessions_cut"]
        print(
            f"\noverload → replica requested: p50 {reaction['p50']} s, p95 {reaction['p95']} s,"
            f" max {reaction['max']} s (n={reaction['n']}; goal ≤ 10 s)"
        )
        print(
            f"sessions cut over {cycles['completed_cycles']} scale-down cycles: operator"
            f" {cut['operator']:.0f}, calls {cut['calls']}, fillers {cut['fillers']},"
            f" runtimes not exiting 0: {len(cut['runtimes_not_exiting_0'])} (goal 0);"
            f" {cycles['drains_that_waited_for_calls']} drains waited for live calls"
        )
    if scrape := report.get("scrape"):
        print(
            f"operator scraping {scrape['pods']} pods: {scrape['scraping']['cpu_pct_of_a_core']} %"
            f" of a core, RSS {scrape['scraping']['rss_mib']} MiB"
            f" (idle: {scrape['idle']['cpu_pct_of_a_core']} %, {scrape['idle']['rss_mib']} MiB)"
        )
