"""`parley bench operator`: how fast the operator turns VoiceDeployments into workloads.

Against the cluster in $KUBECONFIG (`make cluster-up`: a real control plane with kwok nodes),
it installs the CRD, starts `parley operator run` for a fresh namespace, then
1. creates VoiceDeployments one at a time and times apply → all children exist
   (runtime and TTS Deployments and Services, the runtime PodDisruptionBudget);
2. creates more in a burst up to the total and times until every one is Ready=True
   (its pods Running and Ready on kwok nodes);
3. reads the operator's resident memory (VmRSS) at that size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from kubernetes import client, config

from parley_bench.proc import rss_mib
from parley_bench.results import write_results
from parley_operator.api import GROUP, PLURAL, VERSION, crd
from parley_operator.render import VD_LABEL

NAMESPACE = "parley-bench"
OPERATOR_LOG = Path.home() / ".cache" / "parley" / "logs" / "bench-operator.log"
CHILDREN = ("deployments", "services", "poddisruptionbudgets")


def voice_deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VoiceDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "runtime": {"replicas": {"min": 1, "max": 3}, "asr": {"model": "tiny.en"}},
            "llm": {"endpoint": "http://llm.default.svc:8000/v1", "model": "SmolLM2-135M-Instruct"},
            "tts": {"backend": "piper"},
        },
    }


def bench_node(name: str) -> dict[str, Any]:
    resources = {"cpu": "1000", "memory": "4Ti", "pods": "1000"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name},
        },
        "status": {"capacity": resources, "allocatable": resources},
    }


class Cluster:
    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        config.load_kube_config()
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.ext = client.ApiextensionsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def prepare(self, pods_needed: int) -> None:
        try:
            self.ext.create_custom_resource_definition(crd())  # type: ignore[arg-type]
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        time.sleep(2)
        try:
            self.core.create_namespace({"metadata": {"name": self.namespace}})  # type: ignore[arg-type]
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        for i in range(max(1, pods_needed // 900 + 1)):
            try:
                self.core.create_node(bench_node(f"bench-node-{i}"))  # type: ignore[arg-type]
            except client.ApiException as exc:
                if exc.status != 409:
                    raise

    def create(self, name: str) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, voice_deployment(name)
        )

    def children_exist(self, name: str) -> bool:
        selector = f"{VD_LABEL}={name}"
        deployments = self.apps.list_namespaced_deployment(NAMESPACE, label_selector=selector).items
        services = self.core.list_namespaced_service(NAMESPACE, label_selector=selector).items
        pdbs = self.policy.list_namespaced_pod_disruption_budget(
            NAMESPACE, label_selector=selector
        ).items
        return len(deployments) == 2 and len(services) == 2 and len(pdbs) == 1

    def ready_count(self) -> int:
        listed: Any = self.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        items = listed["items"]
        return sum(
            any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (i.get("status") or {}).get("conditions", [])
            )
            for i in items
        )


def run_operator_bench(sequential: int, total: int, out: str, timeout_s: float = 1800) -> int:
    if not os.environ.get("KUBECONFIG"):
        raise SystemExit("set KUBECONFIG (e.g. `make cluster-up` prints the export line)")
    cluster = Cluster()
    cluster.prepare(pods_needed=2 * total)
    OPERATOR_LOG.parent.mkdir(parents=True, exist_ok=True)
    print(f"operator log: {OPERATOR_LOG}", flush=True)
    operator = subprocess.Popen(
        [sys.executable, "-m", "parley", "operator", "run", "-n", NAMESPACE],
        stdout=OPERATOR_LOG.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        time.sleep(3)
        latencies = []
        for i in range(sequential):
            name = f"seq-{i:03d}"
            started = time.monotonic()
            cluster.create(name)
            while not cluster.children_exist(name):
                if time.monotonic() - started > 60:
                    raise SystemExit(f"{name}: children did not appear within 60 s")
                time.sleep(0.02)
            latencies.append((time.monotonic() - started) * 1000)
            print(f"  {name}: children in {latencies[-1]:.0f} ms", flush=True)
        burst_started = time.monotonic()
        for i in range(total - sequential):
            cluster.create(f"burst-{i:03d}")
        print(
            f"created {total - sequential} more in {time.monotonic() - burst_started:.1f} s",
            flush=True,
        )
        ready = 0
        while (ready := cluster.ready_count()) < total:
            if time.monotonic() - burst_started > timeout_s:
                break
            print(
                f"  {ready}/{total} Ready after {time.monotonic() - burst_started:.0f} s",
                flush=True,
            )
            time.sleep(5)
        converged_s = time.monotonic() - burst_started
        rss = rss_mib(operator.pid)
    finally:
        operator.terminate()
        operator.wait(30)
    report: dict[str, Any] = {
        "apply_to_children_ms": {
            "n": len(latencies),
            "p50": round(float(np.percentile(latencies, 50)), 1),
            "p95": round(float(np.percentile(latencies, 95)), 1),
            "samples": [round(x, 1) for x in latencies],
        },
        "total": total,
        "ready": ready,
        "converge_s": round(converged_s, 1),
        "operator_rss_mib": round(rss, 1),
    }
    a = report["apply_to_children_ms"]
    print(f"\napply -> children exist: p50 {a['p50']} ms, p95 {a['p95']} ms (n={a['n']})")
    print(f"{total} VoiceDeployments: {ready} Ready {converged_s:.1f} s after the burst began")
    print(f"operator RSS at {total}: {rss:.1f} MiB")
    write_results(report, out)
    return 0 if ready == total else 1
