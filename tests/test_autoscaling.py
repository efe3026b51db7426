"""The autoscaler end to end: the real control plane, the operator, and a real runtime process
for every runtime pod (`bench/parley_bench/kubelet.py` plays kubelet: each pod's runtime serves on
its own 127.0.0.N:8080, written into the pod's status as its IP). Real WebRTC sessions make the
load; the windows are shortened through the spec.

What it shows: sessions scale the runtime up; once they stop, a scale-down waits the window,
drains the idle pod and removes exactly it while the pod holding a conversation keeps it; a
drain waits for its live session and survives an operator restart; a pod whose SCOS cannot be
read never causes a scale-down and is reported; a pod at SESSION_REJECT adds a pod at once; a
reconcile never resets the replicas the autoscaler chose. No session is ever cut.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from kopf.testing import KopfRunner

from parley_bench.kubelet import RuntimeKubelet
from parley_bench.peer import Peer
from parley_runtime.webrtc import use_host_addresses
from tests.support.cluster import ControlPlane
from tests.support.operator_env import operator_namespace
from tests.support.runtime_host import free_port
from tests.support.scripted_llm import ScriptedLLMServer
from tests.support.talk import turn
from tests.support.waiting import eventually

pytestmark = [pytest.mark.k8s, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[1]
NS = "autoscaling-tests"
NAME = "scaler"
RUNTIME = f"{NAME}-runtime"
SELECTOR = f"app.kubernetes.io/component=runtime,parley.dev/voicedeployment={NAME}"
#: scaleDownStabilizationSeconds: how long demand stays low before a drain.
WINDOW_S = 8
#: backpressureWindowSeconds: how long a pod's pressure lasts before it asks for a pod.
PRESSURE_S = 2
SCALING = {
    "intervalSeconds": 1,
    "scrapeTimeoutSeconds": 1,
    # One session per pod at the target: two sessions on one pod ask for a second pod.
    "targetUtilization": 50,
    "bufferSessions": 0,
    "tolerance": 10,
    "backpressureWindowSeconds": PRESSURE_S,
    "scaleUpStabilizationSeconds": 0,
    "scaleDownStabilizationSeconds": WINDOW_S,
    "drainTimeoutSeconds": 30,
}
T = TypeVar("T")


# -- fixtures ----------------------------------------------------------------------------------


class Operator:
    """The operator under test (in this process, as kopf's runner runs it), restartable."""

    def __init__(self) -> None:
        self.runner: KopfRunner | None = None

    def start(self) -> None:
        self.runner = KopfRunner(
            ["run", "--standalone", "--namespace", NS, "-m", "parley_operator.handlers"],
            timeout=60,
        )
        self.runner.__enter__()

    def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.__exit__(None, None, None)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    metrics_port = str(free_port())
    with operator_namespace(control_plane, NS, PARLEY_OPERATOR_METRICS_PORT=metrics_port) as plane:
        yield plane


@pytest.fixture(scope="module")
def kubelet(
    cluster: ControlPlane, scripted_llm: ScriptedLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeKubelet]:
    logs = tmp_path_factory.mktemp("runtimes")
    with RuntimeKubelet(cluster.kubeconfig, NS, SELECTOR, scripted_llm.url, logs) as kubelet:
        yield kubelet


@pytest.fixture(scope="module")
def operator(cluster: ControlPlane) -> Iterator[Operator]:
    running = Operator()
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def agent(cluster: ControlPlane, kubelet: RuntimeKubelet, operator: Operator) -> Iterator[str]:
    # The runtimes offer ICE candidates on their own 127.0.0.N; the peers here use 127.0.0.1
    # (what the suite's in-process runtimes set for the whole process, too).
    use_host_addresses(["127.0.0.1"])
    manifest = yaml.safe_load((REPO / "examples" / "cpu.yaml").read_text())
    manifest["metadata"]["name"] = NAME
    manifest["spec"]["runtime"].update(replicas={"min": 1, "max": 3}, sessionsPerPod=2)
    manifest["spec"]["scaling"] = SCALING
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(manifest))
    eventually(lambda: len(ready_pods(cluster, kubelet)) == 1, "one ready runtime pod")
    yield NAME
    cluster.kubectl("delete", "vd", NAME, "-n", NS, "--wait=true", "--timeout=60s")


# -- helpers -----------------------------------------------------------------------------------


async def until(check: Callable[[], T], what: str, timeout: float = 30) -> T:
    """`eventually`, off the event loop (the peers' media runs on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await asyncio.to_thread(check)
        if result:
            return result
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s: {what}")


def get(plane: ControlPlane, *what: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(plane.kubectl("get", *what, "-n", NS, "-o", "json"))
    return loaded


def replicas(plane: ControlPlane) -> int:
    return int(get(plane, "deployment", RUNTIME)["spec"]["replicas"])


def scaling(plane: ControlPlane) -> dict[str, Any]:
    return dict((get(plane, "vd", NAME).get("status") or {}).get("scaling") or {})


def condition(plane: ControlPlane, kind: str) -> dict[str, Any]:
    conditions = (get(plane, "vd", NAME).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def pods(plane: ControlPlane) -> list[str]:
    listed = get(plane, "pods", "-l", SELECTOR)["items"]
    return sorted(
        p["metadata"]["name"] for p in listed if not p["metadata"].get("deletionTimestamp")
    )


def ready_pods(plane: ControlPlane, kubelet: RuntimeKubelet) -> list[str]:
    """The runtime pods that exist, serve at their address, and are Ready in their status."""
    listed = get(plane, "pods", "-l", SELECTOR)["items"]
    addresses = kubelet.addresses()
    return sorted(
        p["metadata"]["name"]
        for p in listed
        if addresses.get(p["metadata"]["name"]) == (p.get("status") or {}).get("podIP")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    )


def patch_spec(plane: ControlPlane, spec: dict[str, Any]) -> None:
    plane.kubectl("patch", "vd", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": spec}))


def scos(kubelet: RuntimeKubelet, pod: str) -> dict[str, Any]:
    summary: dict[str, Any] = httpx.get(f"{kubelet.url(pod)}/v1/scos", timeout=5).json()
    return summary


def serving(kubelet: RuntimeKubelet, pod: str) -> bool:
    try:
        return httpx.get(f"{kubelet.url(pod)}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def metric(name: str) -> float:
    """One sample of the operator's `/metrics` (0 when it has none yet)."""
    port = os.environ["PARLEY_OPERATOR_METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def events(plane: ControlPlane, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in get(plane, "events")["items"]
        if e["involvedObject"]["name"] == NAME and e["reason"] == reason
    ]


async def connect(url: str) -> Peer:
    peer = Peer(url)
    await peer.connect()
    await peer.wait_state("listening", 15)
    return peer


async def baseline(plane: ControlPlane, kubelet: RuntimeKubelet) -> str:
    """Wait for one ready runtime pod without sessions; its name."""
    (pod,) = await until(
        lambda: (p := ready_pods(plane, kubelet)) and len(p) == 1 and replicas(plane) == 1 and p,
        "one ready runtime pod",
    )
    await until(lambda: scos(kubelet, pod)["sessions"]["active"] == 0, "no session left")
    return str(pod)


CUT = "parley_operator_sessions_cut_total"


# -- tests -------------------------------------------------------------------------------------


async def test_sessions_scale_up_and_the_idle_pod_is_drained_after_the_window(
    cluster: ControlPlane, kubelet: RuntimeKubelet, agent: str
) -> None:
    first = await baseline(cluster, kubelet)
    cut_before = metric(CUT)
    one, two = await connect(kubelet.url(first)), await connect(kubelet.url(first))
    try:
        # 2 sessions / (2 per pod × 50 %) = 2 pods.
        await until(lambda: replicas(cluster) == 2, "a scale-up to 2", timeout=15)
        latest = scaling(cluster)["decisions"][0]
        assert (latest["direction"], latest["from"], latest["to"]) == ("up", 1, 2)
        assert latest["cause"] == "demand"
        assert "demand (2 active + 0 buffer)" in latest["reason"]
        assert await until(lambda: events(cluster, "ScaleUp"), "a ScaleUp event")

        # A reconcile (any spec change) keeps what the autoscaler chose.
        patch_spec(cluster, {"scaling": {"tolerance": 11}})
        vd = await until(
            lambda: (
                (v := get(cluster, "vd", NAME))["status"]["observedGeneration"]
                == v["metadata"]["generation"]
                and v
            ),
            "the spec change reconciled",
        )
        assert vd["status"]["runtime"]["desired"] == 2
        assert replicas(cluster) == 2

        both = await until(lambda: (p := ready_pods(cluster, kubelet)) and len(p) == 2 and p, "2")
        (second,) = set(both) - {first}
        await one.close()
        dropped = time.monotonic()
        await until(lambda: replicas(cluster) == 1, "a scale-down to 1", timeout=WINDOW_S + 20)
        assert time.monotonic() - dropped >= WINDOW_S
        assert await until(lambda: pods(cluster) == [first], "the idle pod removed")
        down = scaling(cluster)["decisions"][:2]
        assert [d["cause"] for d in down] == ["drained", "low_demand"]
        assert second in down[1]["reason"] and (down[0]["from"], down[0]["to"]) == (2, 1)
        assert await until(lambda: kubelet.exit_codes.get(second) == 0, "the idle runtime exited")

        # The conversation on the pod that stayed goes on.
        await turn(two)
        summary = scos(kubelet, first)
        assert summary["sessions"]["active"] == 1
        assert summary["sessions"]["cut_total"] == 0
    finally:
        await one.close()
        await two.close()
    assert metric(CUT) == cut_before


async def test_a_drain_waits_for_its_live_session_across_an_operator_restart(
    cluster: ControlPlane, kubelet: RuntimeKubelet, operator: Operator, agent: str
) -> None:
    await baseline(cluster, kubelet)
    cut_before = metric(CUT)
    # Two pods (min 2), one session on each, then demand for one pod: one of them drains.
    patch_spec(
        cluster, {"scaling": {"targetUtilization": 100}, "runtime": {"replicas": {"min": 2}}}
    )
    both = await until(lambda: (p := ready_pods(cluster, kubelet)) and len(p) == 2 and p, "2 pods")
    peers = {pod: await connect(kubelet.url(pod)) for pod in both}
    try:
        patch_spec(cluster, {"runtime": {"replicas": {"min": 1}}})
        (drained,) = await until(
            lambda: scaling(cluster).get("drainingPods"), "a drain", timeout=WINDOW_S + 15
        )
        (kept,) = set(both) - {drained}
        summary = scos(kubelet, drained)
        assert summary["draining"] and summary["sessions"]["active"] == 1

        await asyncio.to_thread(operator.restart)
        await asyncio.sleep(4)  # the new operator carries the drain on: not done, not undone
        assert replicas(cluster) == 2
        assert scaling(cluster)["drainingPods"] == [drained]
        assert scos(kubelet, drained)["draining"]

        await peers[drained].close()
        await until(lambda: pods(cluster) == [kept], "the drained pod removed", timeout=20)
        assert replicas(cluster) == 1
        assert await until(lambda: kubelet.exit_codes.get(drained) == 0, "its runtime exited")
        await asyncio.sleep(3)
        assert replicas(cluster) == 1  # lowered once, not once per operator
        assert not peers[kept].disconnected.is_set()
        sessions = scos(kubelet, kept)["sessions"]
        assert (sessions["active"], sessions["cut_total"]) == (1, 0)
    finally:
        for peer in peers.values():
            await peer.close()
    assert metric(CUT) == cut_before


async def test_unreadable_scos_holds_and_pressure_adds_a_pod_at_once(
    cluster: ControlPlane, kubelet: RuntimeKubelet, agent: str
) -> None:
    await baseline(cluster, kubelet)
    patch_spec(cluster, {"runtime": {"replicas": {"min": 2}}})
    both = await until(lambda: (p := ready_pods(cluster, kubelet)) and len(p) == 2 and p, "2 pods")
    lost = both[0]
    await asyncio.to_thread(kubelet.partition, lost)  # still Ready, SCOS unreachable
    patch_spec(cluster, {"runtime": {"replicas": {"min": 1}}})

    signals = await until(
        lambda: (c := condition(cluster, "SignalsAvailable")).get("status") == "False" and c,
        "SignalsAvailable False",
        timeout=15,
    )
    assert signals["reason"] == "ScrapeFailing" and lost in signals["message"]
    assert await until(lambda: events(cluster, "ScrapeFailing"), "a ScrapeFailing event")
    await asyncio.sleep(WINDOW_S + 3)  # demand is 0, but one pod is not heard from
    assert replicas(cluster) == 2
    assert pods(cluster) == both
    view = scaling(cluster)
    assert view["unscrapedPods"] == [lost] and view["drainingPods"] == []

    # Back, with capacity driving every level: one session puts it at SESSION_REJECT.
    steps = {"PARLEY_BACKPRESSURE_LOAD_STEPS": "[0.1, 0.1, 0.1, 0.1]"}
    await asyncio.to_thread(kubelet.restore, lost, steps)
    await until(lambda: serving(kubelet, lost), "the pod serving again")
    peer = await connect(kubelet.url(lost))
    try:
        pressed = time.monotonic()
        await until(lambda: replicas(cluster) == 3, "a scale-up to 3", timeout=PRESSURE_S + 10)
        assert time.monotonic() - pressed < PRESSURE_S + 8
        latest = scaling(cluster)["decisions"][0]
        assert (latest["cause"], latest["from"], latest["to"]) == ("backpressure", 2, 3)
        assert "SESSION_REJECT" in latest["reason"]
        assert scaling(cluster)["highestBackpressure"]["pods"] == [lost]
        await until(
            lambda: condition(cluster, "SignalsAvailable").get("status") == "True",
            "SignalsAvailable True again",
        )
    finally:
        await peer.close()
