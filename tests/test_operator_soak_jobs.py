"""Soak tests on the real control plane, with real soaks.

The `parley.dev/soak-now` annotation starts exactly one Job per new value; a value arriving
during a run waits for it. The test plays the kubelet of each Job's pod: it runs
`parley soak` with the pod's own command and arguments, only `--target` pointed at a real
runtime (real models, the real local LLM) and `--result-file` at a file, then writes the pod's
status as a kubelet would, the container terminated with the summary as its message. The
operator reads it back, records the run in `status.soak` and sets `SoakPassing`.

kwok must not play that kubelet itself: it marks every Job pod on its nodes Succeeded at once,
with no message. So the VoiceDeployment's `spec.soak.nodeSelector` names a node that does not
exist: the scheduler leaves the pod Pending, on no node, and kwok (which manages only the pods
of its nodes) never touches it.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from tests.support.cluster import ControlPlane
from tests.support.operator_env import operator_namespace
from tests.support.runtime_host import RunningApp
from tests.support.waiting import eventually

pytestmark = [pytest.mark.k8s, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[1]
NS = "soak-tests"
NAME = "soak-agent"
PARLEY = Path(sys.executable).parent / "parley"
#: A node label no node has: the soak pods stay unscheduled, for the test to run them.
NOWHERE = {"parley.dev/test-kubelet": "this-test"}


def kubectl_json(plane: ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl(*args, "-n", NS, "-o", "json"))


def voice_deployment(plane: ControlPlane) -> dict[str, Any]:
    vd: dict[str, Any] = kubectl_json(plane, "get", "vd", NAME)
    return vd


def voice_deployment_when(
    plane: ControlPlane, check: Callable[[dict[str, Any]], Any], what: str
) -> dict[str, Any]:
    def matching() -> dict[str, Any] | None:
        vd = voice_deployment(plane)
        return vd if check(vd) else None

    return eventually(matching, what)


def condition(vd: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (vd.get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def soak_status(plane: ControlPlane) -> dict[str, Any]:
    soak: dict[str, Any] = (voice_deployment(plane).get("status") or {}).get("soak") or {}
    return soak


def soak_jobs(plane: ControlPlane) -> list[dict[str, Any]]:
    selector = f"parley.dev/voicedeployment={NAME},app.kubernetes.io/component=soak"
    jobs: list[dict[str, Any]] = kubectl_json(plane, "get", "jobs", "-l", selector)["items"]
    return sorted(jobs, key=lambda job: job["metadata"]["creationTimestamp"])


def run_ids(jobs: list[dict[str, Any]]) -> list[str]:
    return [job["metadata"]["annotations"]["parley.dev/soak-run-id"] for job in jobs]


def annotate(plane: ControlPlane, value: str) -> None:
    plane.kubectl("annotate", "vd", NAME, "-n", NS, "--overwrite", f"parley.dev/soak-now={value}")


def patch_soak(plane: ControlPlane, soak: dict[str, Any]) -> None:
    patch = json.dumps({"spec": {"soak": soak}})
    plane.kubectl("patch", "vd", NAME, "-n", NS, "--type=merge", "-p", patch)


def events(plane: ControlPlane) -> dict[str, list[str]]:
    """Event reason → messages, for the VoiceDeployment."""
    found: dict[str, list[str]] = {}
    for event in kubectl_json(plane, "get", "events")["items"]:
        if event["involvedObject"]["name"] == NAME:
            found.setdefault(event["reason"], []).append(event["message"])
    return found


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    with operator_namespace(control_plane, NS, rbac="cluster") as plane:
        yield plane


@pytest.fixture(scope="module")
def operator(cluster: ControlPlane) -> Iterator[KopfRunner]:
    args = ["run", "--standalone", "--namespace", NS, "-m", "parley_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner


def mount_token(plane: ControlPlane, pod: dict[str, Any], workdir: Path) -> Path:
    """The runtime's admin token, which the pod mounts from its Secret, as a file."""
    (secret_name,) = [v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v]
    assert secret_name == f"{NAME}-runtime-admin"
    secret = kubectl_json(plane, "get", "secret", secret_name)
    path = workdir / f"{pod['metadata']['name']}-token"
    path.write_bytes(base64.b64decode(secret["data"]["token"]))
    return path


def play_kubelet(plane: ControlPlane, job: dict[str, Any], target: str, workdir: Path) -> str:
    """Run the Job's pod as its kubelet would, against `target`; returns the message."""
    job_name = job["metadata"]["name"]
    pods = eventually(
        lambda: kubectl_json(
            plane, "get", "pods", "-l", f"batch.kubernetes.io/job-name={job_name}"
        )["items"],
        f"the pod of {job_name}",
    )
    (pod,) = pods
    assert not pod["spec"].get("nodeName"), "the soak pod was scheduled: kwok would run it"
    (container,) = pod["spec"]["containers"]
    args = list(container["args"])
    args[args.index("--target") + 1] = target
    result_file = workdir / f"{job_name}-termination-log"
    args[args.index("--result-file") + 1] = str(result_file)
    args[args.index("--token-file") + 1] = str(mount_token(plane, pod, workdir))
    started = _now()
    command = [str(PARLEY), *container["command"][1:], *args]
    duration_s = int(args[args.index("--duration") + 1].rstrip("s"))
    soak = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 150)
    assert soak.returncode == 0, soak.stderr[-3000:]
    message = result_file.read_text()
    terminated = {
        "exitCode": soak.returncode,
        "reason": "Completed",
        "message": message,
        "startedAt": started,
        "finishedAt": _now(),
    }
    status = {
        "phase": "Succeeded",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"terminated": terminated},
            }
        ],
    }
    plane.kubectl(
        "patch", "pod", pod["metadata"]["name"], "-n", NS, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    return message


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_annotation_runs_real_soaks_one_per_value_and_status_records_them(
    cluster: ControlPlane, operator: KopfRunner, runtime: RunningApp, tmp_path: Path
) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "cpu.yaml").read_text())
    manifest["metadata"]["name"] = NAME
    # Criteria any real run meets here (the suite's machine is slow and shared), so that the
    # first run passes; the second tightens TTFA to the impossible.
    manifest["spec"]["soak"] = {
        "sessions": 2,
        "durationSeconds": 20,
        "dutyCycle": 0.5,
        "maxTtfaP95Ms": 60000,
        "maxBargeInP95Ms": 60000,
        "maxErrorRate": 0.5,
        "nodeSelector": NOWHERE,
    }
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(manifest))
    vd = voice_deployment_when(
        cluster,
        lambda v: condition(v, "Ready").get("status") == "True" and condition(v, "SoakPassing"),
        f"{NAME} Ready, with SoakPassing",
    )
    assert condition(vd, "SoakPassing")["status"] == "Unknown"
    assert condition(vd, "SoakPassing")["reason"] == "SoakNotRun"

    annotate(cluster, "first")
    (job,) = eventually(lambda: soak_jobs(cluster), "a soak Job for 'first'")
    assert run_ids([job]) == ["first"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 3600
    running = eventually(lambda: soak_status(cluster).get("running"), "status.soak.running")
    assert running["runId"] == "first" and running["job"] == job["metadata"]["name"]

    # During the run: the same value again starts nothing; a new one waits for the run, and
    # runs with the spec as it is when it starts (an impossible TTFA, a shorter run).
    annotate(cluster, "first")
    patch_soak(cluster, {"maxTtfaP95Ms": 1, "durationSeconds": 10})
    annotate(cluster, "second")
    queued = eventually(lambda: soak_status(cluster).get("queued"), "status.soak.queued")
    assert queued["runId"] == "second"
    assert run_ids(soak_jobs(cluster)) == ["first"]

    first = json.loads(play_kubelet(cluster, job, runtime.url, tmp_path))
    assert first["passed"] is True, first
    vd = voice_deployment_when(
        cluster, lambda v: condition(v, "SoakPassing").get("status") == "True", "SoakPassing=True"
    )
    record = vd["status"]["soak"]["history"][0]
    assert record["runId"] == "first" and record["passed"] is True
    assert record["sessions"] == 2 and record["trigger"] == "OnDemand"
    assert record["turns"] == first["turns"]["attempted"] > 0
    assert record["latencyMs"]["ttfa"]["p95"] > 0 and record["latencyMs"]["ttfa"]["samples"] > 0
    assert record["rejections"] == first["connections"]["rejected"]
    assert record["cutSessions"] == first["connections"]["cut"]
    assert record["criteria"]["ttfaP95Ms"]["max"] == 60000
    assert condition(vd, "SoakPassing")["reason"] == "SoakPassed"

    # The queued run started by itself once the first ended.
    try:
        jobs = eventually(
            lambda: (j := soak_jobs(cluster)) and len(j) == 2 and j, "the second Job", 120
        )
    except AssertionError as exc:  # say what the operator thought, not only that it waited
        status = json.loads(cluster.kubectl("get", "vd", NAME, "-n", NS, "-o", "json"))["status"]
        listed_events = cluster.kubectl(
            "get", "events", "-n", NS, "-o", "custom-columns=R:.reason,M:.message"
        )
        raise AssertionError(
            f"{exc}\nstatus.soak: {status.get('soak')}\nstatus.runtime: {status.get('runtime')}"
            f"\nevents:\n{listed_events}"
        ) from exc
    assert run_ids(jobs) == ["first", "second"]
    args = jobs[1]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-ttfa-p95-ms") + 1] == "1"
    second = json.loads(play_kubelet(cluster, jobs[1], runtime.url, tmp_path))
    assert second["passed"] is False and second["criteria"]["ttfa_p95_ms"]["passed"] is False
    vd = voice_deployment_when(
        cluster, lambda v: condition(v, "SoakPassing").get("status") == "False", "SoakPassing=False"
    )
    passing = condition(vd, "SoakPassing")
    assert passing["reason"] == "TTFAOverLimit"
    assert passing["message"].startswith("run second failed: TTFA p95")
    history = vd["status"]["soak"]["history"]
    assert [r["runId"] for r in history] == ["second", "first"]
    assert "running" not in vd["status"]["soak"] and "queued" not in vd["status"]["soak"]
    assert vd["status"]["soak"]["lastTrigger"] == "second" and vd["status"]["soak"]["runs"] == 2

    posted = eventually(
        lambda: (e := events(cluster)) and "SoakFailed" in e and e, "a SoakFailed Event"
    )
    assert len(posted["SoakStarted"]) == 2 and len(posted["SoakQueued"]) == 1
    assert len(posted["SoakPassed"]) == 1 and "TTFA p95" in posted["SoakFailed"][0]
    assert run_ids(soak_jobs(cluster)) == ["first", "second"]  # one Job per value, no more
