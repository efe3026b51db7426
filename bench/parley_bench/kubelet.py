"""A kubelet stand-in for the runtime pods of a test cluster.

Each runtime pod the scheduler places (on a kwok node) runs here as a real `parley runtime
serve` process on a loopback address of its own, 127.0.0.N port 8080 (the runtime's port, so
the operator reaches it at `podIP:8080` as in a cluster; every 127/8 address is local on Linux).
The stand-in writes that address into the pod's status as `podIP`, and `Ready` as the process's
`/readyz` says (a draining runtime is not ready), the way kwok writes fake ones. A pod that is
deleted gets SIGTERM: the runtime drains, then exits.

kwok and the stand-in both write these pods' status. kwok's pod-ready stage acts only on a pod
without a `podIP` (see `tools_root()/kwok-stages/pod-ready.yaml`): once the stand-in has set
its address, kwok leaves the pod alone; if kwok's write lands first (a fake IP, Ready before
the process is up), the stand-in's loop writes its own values over it on its next pass. kwok's
pod-delete stage removes a deleted pod at once, so no pod lingers terminating.

`partition(pod)` stops a pod's process but leaves the pod Ready with its address, as a network
partition between the operator and the pod would: its SCOS is unreachable. `restore(pod)`
starts it again, optionally with other settings (`PARLEY_*` variables).

`Kubelet` is the loop; what runs for a pod is its backend: `RuntimeKubelet` starts a runtime
process per pod, `parley bench scaling` also uses SCOS stand-ins (`scos_pods.py`) for a
hundred pods that no machine of this size could run as real runtimes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import httpx
from kubernetes import client, config

RUNTIME_PORT = 8080
#: The suite runs everything on two cores: measured triggers get room (as in conftest).
RUNTIME_ENV = {
    "PARLEY_BACKPRESSURE_LOOP_LAG_MS": "[1000, 1500, 2000, 3000]",
    "PARLEY_BACKPRESSURE_LATE_FRAMES": "[0.5, 0.6, 0.7, 0.8]",
    "PARLEY_TURN_DEADLINE_MS": "10000",
    "PARLEY_TTFA_SLO_MS": "10000",
}


@dataclass
class RuntimeProcess:
    pod: str
    address: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    partitioned: bool = False
    ready: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.address}:{RUNTIME_PORT}"

    def start(self) -> None:
        command = [sys.executable, "-m", "parley", "runtime", "serve", *self.args]
        env = {
            **os.environ,
            **RUNTIME_ENV,
            "PARLEY_ICE_HOST_ADDRESSES": json.dumps([self.address]),
            **self.env,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM (the runtime drains, then exits), SIGKILL after `timeout`; the exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def probe(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False


def loopback_address(index: int) -> str:
    """The `index`-th pod address: 127.0.0.2, 127.0.0.3, … (127.0.0.1 is the test's own)."""
    return f"127.0.{index // 250}.{index % 250 + 2}"


class PodBackend(Protocol):
    """What serves one pod at its address: started when the pod is placed, stopped (SIGTERM:
    drained) when it is deleted."""

    address: str
    partitioned: bool
    ready: bool

    def start(self) -> None: ...

    def stop(self, timeout: float = 40) -> int | None: ...

    def probe(self) -> bool: ...


class Kubelet:
    """Plays kubelet for the pods matching `selector` in `namespace` (see the module doc);
    `backend(pod, container, address)` makes what serves each one."""

    def __init__(
        self, kubeconfig: Path | None, namespace: str, selector: str, first_index: int = 0
    ) -> None:
        self.namespace = namespace
        self.selector = selector
        api = config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
        self.core = client.CoreV1Api(api)
        self.exit_codes: dict[str, int | None] = {}
        self._processes: dict[str, PodBackend] = {}
        self._next_index = first_index
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)

    def backend(self, pod: str, container: Any, address: str) -> PodBackend:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            for name, runtime in self._processes.items():
                self.exit_codes[name] = runtime.stop(timeout=5)

    def addresses(self) -> dict[str, str]:
        """Pod name → the loopback address its runtime serves on."""
        with self._lock:
            return {name: p.address for name, p in self._processes.items()}

    def url(self, pod: str) -> str:
        with self._lock:
            return f"http://{self._processes[pod].address}:{RUNTIME_PORT}"

    def partition(self, pod: str) -> None:
        with self._lock:
            runtime = self._processes[pod]
            runtime.partitioned = True
        runtime.stop()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._sync()
            except Exception as exc:  # the apiserver may be busy; the next pass catches up
                print(f"kubelet stand-in: {exc}", file=sys.stderr)

    def _sync(self) -> None:
        listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        pods: list[Any] = listed.items
        present = set()
        for pod in pods:
            name = pod.metadata.name
            if pod.metadata.deletion_timestamp is not None or not pod.spec.node_name:
                continue
            present.add(name)
            runtime = self._processes.get(name) or self._start(name, pod.spec.containers[0])
            self._report(pod, runtime)
        for name in set(self._processes) - present:
            with self._lock:
                runtime = self._processes.pop(name)
            # SIGTERM drains: live sessions go on until they end or the drain timeout.
            threading.Thread(target=self._stop_gone, args=(name, runtime), daemon=True).start()

    def _stop_gone(self, name: str, runtime: PodBackend) -> None:
        self.exit_codes[name] = runtime.stop()

    def _start(self, name: str, container: Any) -> PodBackend:
        index, self._next_index = self._next_index, self._next_index + 1
        runtime = self.backend(name, container, loopback_address(index))
        runtime.start()
        with self._lock:
            self._processes[name] = runtime
        return runtime

    def _report(self, pod: Any, runtime: PodBackend) -> None:
        """Write the pod's address, and Ready as the runtime says, when they differ."""
        if not runtime.partitioned:
            runtime.ready = runtime.probe()
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        ready = "True" if runtime.ready else "False"
        if pod.status.pod_ip == runtime.address and conditions.get("Ready") == ready:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        states = {"PodScheduled": "True", "Initialized": "True", "ContainersReady": ready}
        status = {
            "phase": "Running",
            "podIP": runtime.address,
            "podIPs": [{"ip": runtime.address}],
            "conditions": [
                {"type": kind, "status": state, "lastTransitionTime": now}
                for kind, state in {**states, "Ready": ready}.items()
            ],
        }
        # A JSON merge patch replaces the lists: a strategic one would merge kwok's fake IP
        # into `podIPs` with ours (two IPv4 addresses, refused).
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            self.namespace,
            {"status": status},
            _content_type="application/merge-patch+json",
        )


class RuntimeKubelet(Kubelet):
    """A real `parley runtime serve` per pod, with the rendered session cap, drain timeout and
    LLM model, the given LLM server, and `env` (`PARLEY_*` settings) on top of `RUNTIME_ENV`."""

    def __init__(
        self,
        kubeconfig: Path | None,
        namespace: str,
        selector: str,
        llm_url: str,
        logs: Path,
        env: dict[str, str] | None = None,
        first_index: int = 0,
    ) -> None:
        super().__init__(kubeconfig, namespace, selector, first_index)
        self.llm_url = llm_url
        self.logs = logs
        self.env = dict(env or {})

    def backend(self, pod: str, container: Any, address: str) -> RuntimeProcess:
        rendered = list(container.args or [])  # what the operator rendered from the spec
        args = ["--host", address, "--port", str(RUNTIME_PORT), "--llm-url", self.llm_url]
        for flag in ("--max-sessions", "--drain-timeout-s", "--llm-model"):
            args += [flag, rendered[rendered.index(flag) + 1]]
        return RuntimeProcess(
            pod=pod, address=address, args=args, log=self.logs / f"{pod}.log", env=self.env
        )

    def restore(self, pod: str, env: dict[str, str] | None = None) -> None:
        with self._lock:
            runtime = self._processes[pod]
            assert isinstance(runtime, RuntimeProcess)
            runtime.env = {**self.env, **(env or {})}
            runtime.start()
            runtime.partitioned = False
