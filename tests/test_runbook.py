"""The runbook's safe restart of a runtime pod, run as written against the test cluster.

The procedure's commands are read from the code block of docs/runbook.md's section "Safe
restart of a runtime pod" and run by bash, so the doc and what is tested cannot drift apart.
The cluster is the one of tests/test_autoscaling.py: the real control plane, the operator, and
the kubelet stand-in (`bench/parley_bench/kubelet.py`) running a real `parley runtime serve`
per runtime pod at the pod's IP (127.0.0.N), with the scripted LLM.

What it shows: with a conversation on the pod, the procedure drains it (it admits nothing and
is not Ready) while the conversation goes on, waits for that session to end, deletes the pod,
and returns once a replacement is ready; the old runtime exits after a drain that cut nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
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

pytestmark = [pytest.mark.k8s, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[1]
RUNBOOK = REPO / "docs" / "runbook.md"
SECTION = "Safe restart of a runtime pod"
NS = "runbook-tests"
NAME = "agent"
SELECTOR = f"app.kubernetes.io/component=runtime,parley.dev/voicedeployment={NAME}"
T = TypeVar("T")


def section_commands(markdown: str, heading: str) -> str:
    """The `bash` code blocks of the `## heading` section, as one script."""
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert section, f"docs/runbook.md has no section {heading!r}"
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), re.M | re.S)
    return "\n".join(blocks)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    metrics_port = str(free_port())
    with operator_namespace(
        control_plane, NS, rbac="cluster", PARLEY_OPERATOR_METRICS_PORT=metrics_port
    ) as plane:
        yield plane


@pytest.fixture(scope="module")
def kubelet(
    cluster: ControlPlane, scripted_llm: ScriptedLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeKubelet]:
    logs = tmp_path_factory.mktemp("runtimes")
    with RuntimeKubelet(cluster.kubeconfig, NS, SELECTOR, scripted_llm.url, logs) as kubelet:
        yield kubelet


@pytest.fixture(scope="module")
def operator(cluster: ControlPlane) -> Iterator[None]:
    args = ["run", "--standalone", "--namespace", NS, "-m", "parley_operator.handlers"]
    with KopfRunner(args, timeout=60):
        yield


@pytest.fixture(scope="module")
def agent(cluster: ControlPlane, kubelet: RuntimeKubelet, operator: None) -> Iterator[str]:
    use_host_addresses(["127.0.0.1"])  # the peers here; the runtimes offer their own 127.0.0.N
    manifest = yaml.safe_load((REPO / "examples" / "cpu.yaml").read_text())
    manifest["metadata"]["name"] = NAME
    manifest["spec"]["runtime"]["replicas"] = {"min": 1, "max": 1}
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(manifest))
    yield NAME
    cluster.kubectl("delete", "vd", NAME, "-n", NS, "--wait=true", "--timeout=60s")


# -- helpers -----------------------------------------------------------------------------------


async def until(check: Callable[[], T], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await asyncio.to_thread(check)
        if result:
            return result
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s: {what}")


def ready_pods(plane: ControlPlane, kubelet: RuntimeKubelet) -> list[str]:
    """The runtime pods that serve at their address and are Ready in their status."""
    listed = json.loads(plane.kubectl("get", "pods", "-n", NS, "-l", SELECTOR, "-o", "json"))
    addresses = kubelet.addresses()
    return sorted(
        p["metadata"]["name"]
        for p in listed["items"]
        if not p["metadata"].get("deletionTimestamp")
        and addresses.get(p["metadata"]["name"]) == (p.get("status") or {}).get("podIP")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    )


def scos(kubelet: RuntimeKubelet, pod: str) -> dict[str, Any]:
    summary: dict[str, Any] = httpx.get(f"{kubelet.url(pod)}/v1/scos", timeout=5).json()
    return summary


def run_procedure(plane: ControlPlane, commands: str, **variables: str) -> subprocess.Popen[str]:
    """bash runs the commands with the runbook's variables, kubectl and parley on its PATH."""
    path = os.pathsep.join([str(plane.bin), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, **variables, "PATH": path, "KUBECONFIG": str(plane.kubeconfig)}
    return subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", commands],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# -- the test ----------------------------------------------------------------------------------


async def test_the_safe_restart_drains_the_pod_cuts_nothing_and_replaces_it(
    cluster: ControlPlane, kubelet: RuntimeKubelet, agent: str
) -> None:
    commands = section_commands(RUNBOOK.read_text(), SECTION)
    assert "parley runtime drain" in commands and "delete pod" in commands
    (old,) = await until(lambda: ready_pods(cluster, kubelet), "a ready runtime pod")
    peer = Peer(kubelet.url(old))
    await peer.connect()
    await peer.wait_state("listening", 15)
    procedure = run_procedure(cluster, commands, NS=NS, VD=agent, POD=old)
    try:
        await until(lambda: scos(kubelet, old)["draining"], "the pod draining", timeout=20)
        await until(lambda: old not in ready_pods(cluster, kubelet), "the pod not Ready")
        assert scos(kubelet, old)["sessions"]["admission_cap"] == 0

        await turn(peer)  # the conversation goes on through the drain
        summary = scos(kubelet, old)
        assert (summary["sessions"]["active"], summary["sessions"]["cut_total"]) == (1, 0)
        assert procedure.poll() is None, "the procedure went on while a session was live"
        assert not peer.disconnected.is_set()
    finally:
        await peer.close()

    output, _ = await asyncio.to_thread(procedure.communicate, timeout=120)
    assert procedure.returncode == 0, output
    assert "no live sessions left" in output
    (new,) = await until(lambda: ready_pods(cluster, kubelet), "a ready replacement")
    assert new != old
    assert await until(lambda: old in kubelet.exit_codes, "the old runtime stopped") and (
        kubelet.exit_codes[old] == 0
    )
    log = (kubelet.logs / f"{old}.log").read_text()
    assert "drained: every session ended" in log and "drain timeout: cut" not in log
